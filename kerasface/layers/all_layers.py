"""Walk every layer inside a model, nested models included."""


def all_layers(layer):
    """Every layer inside ``layer``, nested models' layers included, depth first."""
    for child in getattr(layer, "layers", []):
        yield child
        yield from all_layers(child)
