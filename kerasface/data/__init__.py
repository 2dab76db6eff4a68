"""Training input: identity folders to tf.data, pixel normalisation, synthetic faces."""

from kerasface.data.bad_record_report import BadRecordReport
from kerasface.data.bad_record_tracker import BadRecordTracker, diagnose_image_file
from kerasface.data.image_folder import IMAGE_EXTENSIONS, ImageFolder, image_folder
from kerasface.data.label_map import load_label_map, save_label_map
from kerasface.data.preprocessing import IMAGE_SIZE, normalize_images, normalize_numpy
from kerasface.data.synthetic_faces import (
    SyntheticDataset,
    make_synthetic_dataset,
    synthetic_face,
    synthetic_identity,
    write_synthetic_faces,
    write_synthetic_pairs,
)

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_SIZE",
    "BadRecordReport",
    "BadRecordTracker",
    "ImageFolder",
    "SyntheticDataset",
    "diagnose_image_file",
    "image_folder",
    "load_label_map",
    "make_synthetic_dataset",
    "normalize_images",
    "normalize_numpy",
    "save_label_map",
    "synthetic_face",
    "synthetic_identity",
    "write_synthetic_faces",
    "write_synthetic_pairs",
]
