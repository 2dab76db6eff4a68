from setuptools import find_packages, setup

setup(
    name="kerasface",
    version="0.1.0",
    description="Face-recognition model zoo on TensorFlow/Keras 3 with margin heads and export",
    packages=find_packages(include=["kerasface", "kerasface.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow-cpu==2.21.0",
        "keras==3.15.1",
        "tensorboard==2.21.0",
        "numpy>=1.26,<3",
        "tf2onnx==1.17.0",
        "onnx==1.23.2",
        "onnxruntime==1.31.1",
        "ai-edge-litert==2.3.0",
        "mtcnn==1.0.0",
        "opencv-python-headless==4.14.0.94",
        "pillow>=10",
        "matplotlib>=3.8",
    ],
    extras_require={"gpu": ["onnxruntime-gpu==1.31.1"], "test": ["pytest>=8"]},
    entry_points={"console_scripts": ["kerasface=kerasface.cli.main:main"]},
)
