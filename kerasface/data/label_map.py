"""Identity name -> class index maps, stored as JSON beside a trained model."""

import json
import os


def validate_label_map(label_map, source="label_map"):
    """Check that ``label_map`` maps str names to the indices 0..K-1, each once; returns a dict."""
    if not isinstance(label_map, dict):
        raise TypeError(f"{source}: expected a dict name -> index, got {type(label_map).__name__}")
    result = {}
    for name, index in label_map.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{source}: identity names must be non-empty strings, got {name!r}")
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError(f"{source}: index of {name!r} must be an int, got {index!r}")
        result[name] = index
    indices = sorted(result.values())
    if indices != list(range(len(indices))):
        duplicates = sorted({i for i in indices if indices.count(i) > 1})
        detail = (
            f"duplicated {duplicates}" if duplicates else f"range {indices[:1]}..{indices[-1:]}"
        )
        raise ValueError(
            f"{source}: indices must be 0..{len(indices) - 1}, each used once; got {detail}"
        )
    return result


def save_label_map(label_map, path):
    """Write ``{name: index}`` to ``path`` as JSON, names in index order."""
    label_map = validate_label_map(label_map)
    ordered = dict(sorted(label_map.items(), key=lambda item: item[1]))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(ordered, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return path


def load_label_map(path):
    """Read a JSON ``{name: index}`` written by :func:`save_label_map`."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"label map {path} does not exist")
    with open(path, encoding="utf-8") as f:
        try:
            label_map = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from None
    return validate_label_map(label_map, source=path)
