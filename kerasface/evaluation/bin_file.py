"""insightface verification ``.bin`` files (lfw.bin, cfp_fp.bin, agedb_30.bin, ...), read safely.

A ``.bin`` file is a pickle of ``(bins, issame_list)``: ``bins`` holds 2N encoded JPEG/PNG images,
pair ``i`` being images ``2i`` and ``2i + 1``, and ``issame_list`` holds N booleans. Pickles can run
arbitrary code on load, and these files are downloaded from third-party mirrors, so they are read
with an unpickler that can only rebuild bytes, lists, booleans and NumPy arrays.
"""

import os
import pickle

import numpy as np


def _numpy_global(module_name, name):
    # NumPy 2 moved numpy.core to numpy._core; pickles written by either name must load under both.
    import importlib

    candidates = (module_name.replace("numpy.core", "numpy._core"),
                  module_name.replace("numpy._core", "numpy.core"))
    for module in dict.fromkeys(candidates):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"NumPy has no {module_name}.{name}")


def _latin1_encode(path):
    def encode(text, encoding="utf-8"):
        # Pickle protocols 0-2 store bytes as `_codecs.encode(latin1_text, "latin1")`; other
        # codecs are refused so that this global cannot be used for anything else.
        if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
            raise pickle.UnpicklingError(
                f"{path}: `_codecs.encode` is only allowed with the latin1 codec on text, got "
                f"encoding {encoding!r} on {type(text).__name__}"
            )
        return text.encode("latin1")

    return encode


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that only rebuilds bytes, lists, bools and NumPy arrays.

    Any other global named in the pickle (``os.system``, ``builtins.eval``, a class, ...) raises
    ``pickle.UnpicklingError`` before it is looked up, so nothing from the file is executed.

    Args:
        file: binary file object to read.
        path: name of the file, used in error messages.
    """

    _NUMPY_GLOBALS = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
    _BUILTIN_GLOBALS = {
        ("builtins", "bytes"): bytes,
        ("builtins", "bytearray"): bytearray,
        ("__builtin__", "bytes"): bytes,
        ("__builtin__", "bytearray"): bytearray,
    }

    def __init__(self, file, path="<pickle>"):
        # Python 2 pickles (the original insightface files) store images as `str`: keep them bytes.
        super().__init__(file, encoding="bytes")
        self.path = path

    def find_class(self, module, name):
        if (module, name) in self._NUMPY_GLOBALS:
            return _numpy_global(module, name)
        if (module, name) in self._BUILTIN_GLOBALS:
            return self._BUILTIN_GLOBALS[(module, name)]
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode(self.path)
        raise pickle.UnpicklingError(
            f"{self.path}: refusing to load forbidden global `{module}.{name}`; a verification "
            f".bin file may only contain bytes, lists, booleans and NumPy arrays"
        )


def load_bin(path):
    """Read an insightface verification ``.bin`` file without executing code from it.

    Args:
        path: the ``.bin`` file.

    Returns:
        ``(images_bytes, issame)``: a list of 2N encoded images (``bytes``) and a bool array (N,).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"verification .bin file {path} does not exist")
    with open(path, "rb") as f:
        try:
            content = RestrictedUnpickler(f, path).load()
        except pickle.UnpicklingError:
            raise
        except Exception as error:
            raise ValueError(f"{path}: not a readable verification .bin pickle: {error}") from error
    if not isinstance(content, (tuple, list)) or len(content) != 2:
        raise ValueError(
            f"{path}: expected a pickled pair `(bins, issame_list)`, got {_describe(content)}"
        )
    bins, issame_list = content
    if not isinstance(bins, (list, tuple, np.ndarray)):
        raise ValueError(f"{path}: `bins` must be a list of encoded images, got {_describe(bins)}")
    images_bytes = [_as_bytes(path, index, item) for index, item in enumerate(bins)]
    issame = _as_issame(path, issame_list)
    if len(images_bytes) != 2 * len(issame):
        raise ValueError(
            f"{path}: {len(issame)} pairs need {2 * len(issame)} images, got {len(images_bytes)}"
        )
    return images_bytes, issame


def write_bin(path, images_bytes, issame):
    """Write ``(images_bytes, issame)`` as an insightface-compatible ``.bin`` file.

    Args:
        path: the file to write.
        images_bytes: 2N encoded images (JPEG/PNG ``bytes``), pair ``i`` = images ``2i``, ``2i+1``.
        issame: N booleans.
    """
    images_bytes = [bytes(item) for item in images_bytes]
    issame = [bool(value) for value in issame]
    if len(images_bytes) != 2 * len(issame):
        raise ValueError(
            f"{len(issame)} pairs need {2 * len(issame)} images, got {len(images_bytes)}"
        )
    with open(os.fspath(path), "wb") as f:
        pickle.dump((images_bytes, issame), f, protocol=4)


def decode_bin_images(images_bytes, source="<bin>"):
    """Decode encoded images to a uint8 ``(N, 112, 112, 3)`` RGB array (resized when needed).

    Args:
        images_bytes: list of encoded JPEG/PNG images, e.g. from :func:`load_bin`.
        source: name of the file they came from, used in the error naming a corrupt image.
    """
    from kerasface.evaluation.embed_images import decode_images

    names = [f"{source}: image #{index}" for index in range(len(images_bytes))]
    return decode_images(images_bytes, names=names)


def _describe(value):
    if isinstance(value, (list, tuple)):
        return f"{type(value).__name__} of length {len(value)}"
    return type(value).__name__


def _as_bytes(path, index, item):
    if isinstance(item, bytes):
        return item
    if isinstance(item, bytearray):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    raise ValueError(f"{path}: image #{index} must be encoded image bytes, got {_describe(item)}")


def _as_issame(path, issame_list):
    try:
        values = np.asarray(issame_list)
    except Exception as error:
        raise ValueError(f"{path}: `issame_list` is not a list of booleans: {error}") from error
    if values.ndim != 1:
        raise ValueError(f"{path}: `issame_list` must be 1-D, got shape {values.shape}")
    if values.dtype == bool:
        return values
    if values.dtype.kind in "iu" and np.isin(values, (0, 1)).all():
        return values.astype(bool)
    raise ValueError(
        f"{path}: `issame_list` must hold booleans (or 0/1), got dtype {values.dtype} with values "
        f"{np.unique(values)[:5].tolist()}"
    )
