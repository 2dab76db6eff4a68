"""argparse ``type=`` converters shared by the CLI and the bench scripts; errors quote the value."""

import argparse
import json


def integer_at_least(minimum):
    """A converter accepting integers >= ``minimum``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


def positive_float(text):
    """A number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value}")
    return value


def name_json_pair(example):
    """A converter for ``NAME=JSON`` (a JSON object) -> ``(name, dict)``; ``example`` shows the form."""

    def parse(text):
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError(f"expected NAME=JSON, e.g. {example}, got {text!r}")
        try:
            kwargs = json.loads(value)
        except json.JSONDecodeError as error:
            raise argparse.ArgumentTypeError(f"{name}: not valid JSON ({error}): {value!r}") from None
        if not isinstance(kwargs, dict):
            raise argparse.ArgumentTypeError(f"{name}: expected a JSON object, got {value!r}")
        return name, kwargs

    return parse


def far_value(text):
    """A FAR target in (0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a FAR in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a FAR in (0, 1), got {value}")
    return value
