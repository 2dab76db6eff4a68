"""Loading the ``--model`` argument of a subcommand, with the error a user should see."""

import sys


def load_model_argument(path, command):
    """The embedding model at ``path``, or None after printing why it cannot be loaded."""
    from kerasface.models import load_embedding_model

    try:
        return load_embedding_model(path)
    except (OSError, ValueError) as error:
        print(f"kerasface {command}: error: cannot load model {path}: {error}", file=sys.stderr)
        return None
