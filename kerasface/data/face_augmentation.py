"""Batched, stateless, per-sample face augmentation for the tf.data training pipeline.

Operations, in the order they run (each with its own per-sample probability, 0 = off):

1. flip: left-right mirror.
2. crop: random resized crop as torchvision's RandomResizedCrop: a box with area fraction
   uniform in ``crop_scale`` and aspect ratio width / height log-uniform in ``crop_ratio`` is
   resized back to the input size (bilinear, ``tf.image.crop_and_resize``). Of 10 candidate
   boxes the first that fits is used; if none fits the sample keeps the whole image.
3. color_jitter: brightness, contrast, saturation, hue, in this fixed order (torchvision
   shuffles it), factors uniform in ``[max(0, 1 - s), 1 + s]``, hue shift uniform in
   ``[-hue, hue]`` turns. Hue is a rotation of the YIQ chroma plane (keeps luma) rather than
   an HSV round trip, ~10x cheaper. Jitter and grayscale together are one affine colour map
   per sample, clipped to [0, 255] once at the end: each step alone matches torchvision;
   chained, they differ only where an intermediate step would have saturated.
4. grayscale: ITU-R 601 luma (``tf.image.rgb_to_grayscale`` weights) in all 3 channels.
5. blur: separable Gaussian, sigma uniform in ``blur_sigma`` per sample, radius
   ``ceil(3 * max sigma)``, reflected borders.
6. low_resolution: area downscale to a side drawn uniformly from the integers in
   ``low_resolution_size``, then bilinear upscale (half-pixel centres) back.
7. erasing: random erasing (Zhong et al. 2017): a rectangle, area fraction uniform in
   ``erasing_scale`` (checked after rounding to pixels), aspect ratio height / width
   log-uniform in ``erasing_ratio``, smaller than the image, filled with uniform noise in
   [0, 255] (``erasing_value=None``, the paper's choice) or the constant ``erasing_value``.
   If none of 10 candidates fits, the sample is unchanged.

How it stays vectorised: every decision and parameter is drawn for the whole batch from the
call's seed (each operation from its own stream, ``stateless_fold_in(seed, position)``, so
turning one operation on or off does not change another's decisions). Only the samples some
operation chose are gathered and converted to float, ordered so that the cropped ones come
first (``crop_and_resize`` writes only those, from the uint8 batch) and the blurred /
low-resolution ones form one slice. Blur and low resolution are both linear and separable: per
sample and axis an (H, H) matrix (Gaussian with reflected borders; down-then-up resampling,
precomputed for every side length and gathered per sample; their product when both apply),
so a batch mixing many sigmas and sizes is two batched matmuls. Samples an operation did not
choose get its identity (unit factors, identity matrix, empty rectangle), which is exact in
float32. The subset is rounded back to uint8 and gathered into batch order.
"""

import math

import numpy as np
import tensorflow as tf

# ITU-R 601 luma, the weights tf.image.rgb_to_grayscale uses.
LUMA_WEIGHTS = (0.2989, 0.5870, 0.1140)

# RGB -> YIQ (rows Y, I, Q): hue jitter rotates the (I, Q) plane.
_YIQ = np.array(
    [LUMA_WEIGHTS, (0.596, -0.274, -0.322), (0.211, -0.523, 0.312)], np.float32
)
_YIQ_INVERSE = np.linalg.inv(_YIQ.astype(np.float64)).astype(np.float32)

# Order in which the operations run (each one optional, per-sample).
OP_ORDER = ("flip", "crop", "color_jitter", "grayscale", "blur", "low_resolution", "erasing")

# Candidate boxes drawn per sample for random resized crop and erasing; the first one that fits
# is used, as torchvision retries up to 10 times, but all drawn at once to stay vectorised.
_ATTEMPTS = 10

_DEFAULTS = {
    "flip": 0.5,
    "crop": 0.0,
    "crop_scale": (0.8, 1.0),
    "crop_ratio": (3 / 4, 4 / 3),
    "color_jitter": 0.0,
    "brightness": 0.3,
    "contrast": 0.3,
    "saturation": 0.3,
    "hue": 0.05,
    "grayscale": 0.0,
    "blur": 0.0,
    "blur_sigma": (0.1, 2.0),
    "low_resolution": 0.0,
    "low_resolution_size": (16, 56),
    "erasing": 0.0,
    "erasing_scale": (0.02, 0.2),
    "erasing_ratio": (0.3, 3.3),
    "erasing_value": None,
}

# Overrides of the defaults; also usable as the first item of FaceAugmentation.from_string.
AUGMENTATION_PRESETS = {
    "none": {"flip": 0.0},
    "flip": {"flip": 0.5},
    "light": {
        "flip": 0.5,
        "color_jitter": 0.3,
        "grayscale": 0.05,
        "blur": 0.05,
        "low_resolution": 0.05,
    },
    "strong": {
        "flip": 0.5,
        "crop": 0.3,
        "color_jitter": 0.5,
        "grayscale": 0.1,
        "blur": 0.2,
        "low_resolution": 0.2,
        "erasing": 0.2,
    },
}

_PAIRS = ("crop_scale", "crop_ratio", "blur_sigma", "low_resolution_size", "erasing_scale",
          "erasing_ratio")


class FaceAugmentation:
    """Random per-sample augmentation of a batch of uint8 RGB faces, stateless and in-graph.

    Applied by the training pipeline to decoded uint8 batches before normalisation; the
    operations, their order and how they are vectorised are described in the module docstring.
    Same images and seed give the same output, eagerly, in ``tf.function`` and in
    ``tf.data``. Strengths and ranges only matter when their operation's probability is > 0.

    Args:
        flip: probability of a horizontal flip.
        crop: probability of a random resized crop.
        crop_scale: (min, max) area fraction of the crop box, in (0, 1].
        crop_ratio: (min, max) aspect ratio width / height of the crop box.
        color_jitter: probability of colour jitter.
        brightness: brightness strength s >= 0 (factor in ``[1 - s, 1 + s]``).
        contrast: contrast strength >= 0.
        saturation: saturation strength >= 0.
        hue: hue strength in [0, 0.5] (shift in turns).
        grayscale: probability of converting to grayscale.
        blur: probability of a Gaussian blur.
        blur_sigma: (min, max) blur sigma in pixels.
        low_resolution: probability of the low-resolution simulation.
        low_resolution_size: (min, max) integer side length of the low-resolution image.
        erasing: probability of random erasing.
        erasing_scale: (min, max) area fraction of the erased rectangle, in (0, 1).
        erasing_ratio: (min, max) aspect ratio height / width of the erased rectangle.
        erasing_value: None to fill with uniform noise (its pixel values, unlike every
            decision, depend on which samples other operations chose), or a constant in
            [0, 255].

    Call arguments:
        images: uint8 ``(B, H, W, 3)`` RGB batch (112x112 in kerasface).
        seed: int ``(2,)`` tensor (or pair) of the stateless random draws.

    Returns:
        uint8 ``(B, H, W, 3)`` augmented batch.
    """

    def __init__(
        self,
        flip=0.5,
        crop=0.0,
        crop_scale=(0.8, 1.0),
        crop_ratio=(3 / 4, 4 / 3),
        color_jitter=0.0,
        brightness=0.3,
        contrast=0.3,
        saturation=0.3,
        hue=0.05,
        grayscale=0.0,
        blur=0.0,
        blur_sigma=(0.1, 2.0),
        low_resolution=0.0,
        low_resolution_size=(16, 56),
        erasing=0.0,
        erasing_scale=(0.02, 0.2),
        erasing_ratio=(0.3, 3.3),
        erasing_value=None,
    ):
        self.flip = _probability("flip", flip)
        self.crop = _probability("crop", crop)
        self.crop_scale = _pair("crop_scale", crop_scale, low=0.0, high=1.0)
        self.crop_ratio = _pair("crop_ratio", crop_ratio, low=0.0)
        self.color_jitter = _probability("color_jitter", color_jitter)
        self.brightness = _strength("brightness", brightness)
        self.contrast = _strength("contrast", contrast)
        self.saturation = _strength("saturation", saturation)
        self.hue = _strength("hue", hue, high=0.5)
        self.grayscale = _probability("grayscale", grayscale)
        self.blur = _probability("blur", blur)
        self.blur_sigma = _pair("blur_sigma", blur_sigma, low=0.0, high=20.0)
        self.low_resolution = _probability("low_resolution", low_resolution)
        self.low_resolution_size = _pair(
            "low_resolution_size", low_resolution_size, low=1, integer=True
        )
        self.erasing = _probability("erasing", erasing)
        self.erasing_scale = _pair("erasing_scale", erasing_scale, low=0.0, high=1.0,
                                   high_open=True)
        self.erasing_ratio = _pair("erasing_ratio", erasing_ratio, low=0.0)
        if erasing_value is not None:
            erasing_value = _number("erasing_value", erasing_value)
            if not 0 <= erasing_value <= 255:
                raise ValueError(
                    f"`erasing_value` must be None (noise) or in [0, 255], got {erasing_value}"
                )
        self.erasing_value = erasing_value
        if self.color_jitter > 0 and not (
            self.brightness or self.contrast or self.saturation or self.hue
        ):
            raise ValueError(
                f"`color_jitter` is {self.color_jitter} but brightness, contrast, saturation "
                "and hue are all 0: the jitter would do nothing"
            )
        self._tables = {}

    # ---- construction ----------------------------------------------------------------------

    @classmethod
    def none(cls):
        """Every operation off: the call returns its input unchanged."""
        return cls(flip=0.0)

    @classmethod
    def from_string(cls, text):
        """Parse ``"flip=0.5,blur=0.2,blur_sigma=0.5:1.5"`` (CLI and recipe form).

        The first item may be a preset name from :data:`AUGMENTATION_PRESETS` (``"light"``,
        ``"light,erasing=0.1"``); later items override it. Pairs are written ``min:max`` (or
        ``(min,max)``); ``erasing_value=noise`` means None. Names not given keep their
        defaults.
        """
        if not isinstance(text, str):
            raise TypeError(f"augmentation string must be a str, got {type(text).__name__}")
        items = [item.strip() for item in _split_items(text)]
        if not any(items):
            raise ValueError(
                f"empty augmentation string {text!r}; use 'none' for no augmentation"
            )
        kwargs = {}
        if "=" not in items[0]:
            name = items.pop(0)
            if name not in AUGMENTATION_PRESETS:
                raise ValueError(
                    f"unknown augmentation preset {name!r} in {text!r}; presets: "
                    f"{', '.join(AUGMENTATION_PRESETS)} (or give `name=value` items)"
                )
            kwargs.update(AUGMENTATION_PRESETS[name])
        given = set()
        for item in items:
            if "=" not in item:
                raise ValueError(
                    f"augmentation item {item!r} in {text!r} is not `name=value` (a preset "
                    "name may only come first)"
                )
            name, value = (part.strip() for part in item.split("=", 1))
            if name not in _DEFAULTS:
                raise ValueError(
                    f"unknown augmentation option {name!r} in {text!r}; options: "
                    f"{', '.join(_DEFAULTS)}"
                )
            if name in given:
                raise ValueError(f"augmentation option {name!r} given twice in {text!r}")
            given.add(name)
            kwargs[name] = _parse_value(name, value, text)
        return cls(**kwargs)

    def to_string(self):
        """The :meth:`from_string` form: ``flip`` and every non-default argument."""
        items = []
        for name, value in self.get_config().items():
            if name != "flip" and value == _DEFAULTS[name]:
                continue
            if name in _PAIRS:
                value = f"{value[0]!r}:{value[1]!r}"
            elif value is None:
                value = "noise"
            else:
                value = repr(value)
            items.append(f"{name}={value}")
        return ",".join(items)

    def get_config(self):
        return {name: getattr(self, name) for name in _DEFAULTS}

    @classmethod
    def from_config(cls, config):
        unknown = sorted(set(config) - set(_DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown FaceAugmentation config key(s) {', '.join(unknown)}; expected some "
                f"of {', '.join(_DEFAULTS)}"
            )
        return cls(**config)

    @property
    def enabled_ops(self):
        """Names of the operations with probability > 0, in the order they run."""
        return tuple(name for name in OP_ORDER if getattr(self, name) > 0)

    def __repr__(self):
        items = []
        for name, value in self.get_config().items():
            if name == "flip" or value != _DEFAULTS[name]:
                items.append(f"{name}={value!r}")
        return f"FaceAugmentation({', '.join(items)})"

    def __eq__(self, other):
        if not isinstance(other, FaceAugmentation):
            return NotImplemented
        return self.get_config() == other.get_config()

    def __hash__(self):
        return hash(tuple(self.get_config().items()))

    # ---- call ------------------------------------------------------------------------------

    # No Python control flow depends on tensors here (decisions are tf.cond / masks), so
    # AutoGraph conversion would only slow down every tf.function / tf.data trace.
    @tf.autograph.experimental.do_not_convert
    def __call__(self, images, seed):
        # Plain tf ops, not keras.ops: this runs inside tf.data whatever the Keras backend is.
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.uint8:
            raise ValueError(f"FaceAugmentation: images must be uint8, got {images.dtype.name}")
        if images.shape.rank != 4 or images.shape[-1] not in (3, None):
            raise ValueError(
                f"FaceAugmentation: images must be (batch, height, width, 3), got shape "
                f"{images.shape}"
            )
        seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
        if seed.shape != (2,):
            raise ValueError(f"FaceAugmentation: `seed` must have shape (2,), got {seed.shape}")
        batch = tf.shape(images)[0]

        def draw(op, columns):
            op_seed = tf.random.experimental.stateless_fold_in(seed, OP_ORDER.index(op))
            return tf.random.stateless_uniform([batch, columns], seed=op_seed)

        if self.flip > 0:
            images = _flip(images, draw("flip", 1)[:, 0] < self.flip)
        ops = [op for op in self.enabled_ops if op != "flip"]
        if not ops:
            return images
        height, width = images.shape[1], images.shape[2]
        if height is None or width is None:
            raise ValueError(
                f"FaceAugmentation: {', '.join(ops)} need images with a static height and "
                f"width, got shape {images.shape}"
            )
        self._check_image_size(height, width)

        # Every decision and parameter is drawn for the whole batch up front; only the samples
        # that some operation chose (the "subset") are converted to float and transformed.
        chosen, params = {}, {}
        no = tf.zeros([batch], tf.bool)
        if self.crop > 0:
            u = draw("crop", 3 + 2 * _ATTEMPTS)
            chosen["crop"] = u[:, 0] < self.crop
            params["crop"] = self._crop_boxes(u, height, width)
        if self.color_jitter > 0:
            u = draw("color_jitter", 5)
            chosen["color_jitter"] = u[:, 0] < self.color_jitter
            params["color_jitter"] = self._jitter_factors(u)
        if self.grayscale > 0:
            chosen["grayscale"] = draw("grayscale", 1)[:, 0] < self.grayscale
        if self.blur > 0:
            u = draw("blur", 2)
            chosen["blur"] = u[:, 0] < self.blur
            low, high = self.blur_sigma
            params["blur"] = low + (high - low) * u[:, 1]
        if self.low_resolution > 0:
            u = draw("low_resolution", 2)
            chosen["low_resolution"] = u[:, 0] < self.low_resolution
            low, high = self.low_resolution_size
            params["low_resolution"] = tf.minimum(
                tf.cast(u[:, 1] * (high - low + 1), tf.int32), high - low
            )
        if self.erasing > 0:
            u = draw("erasing", 3 + 2 * _ATTEMPTS)
            rects, found = self._erasing_rectangles(u, height, width)
            chosen["erasing"] = (u[:, 0] < self.erasing) & found
            params["erasing"] = rects

        selected = tf.reduce_any(tf.stack(list(chosen.values())), axis=0)
        crop = chosen.get("crop", no)
        resample = chosen.get("blur", no) | chosen.get("low_resolution", no)
        # Subset order: cropped samples first (crop_and_resize writes only those), and the
        # blurred / low-resolution ones contiguous (one slice), so no stage needs a scatter.
        groups = [
            crop & ~resample,
            crop & resample,
            ~crop & resample,
            ~crop & ~resample & selected,
        ]
        group_index = [tf.cast(tf.where(group)[:, 0], tf.int32) for group in groups]
        order = tf.concat(group_index, axis=0)
        sizes = [tf.shape(index)[0] for index in group_index]
        num_cropped = sizes[0] + sizes[1]
        resample_start, resample_stop = sizes[0], sizes[0] + sizes[1] + sizes[2]

        def subset(name):
            return tf.gather(chosen[name], order)

        def augment():
            x = tf.cast(tf.gather(images, order[num_cropped:]), tf.float32)
            if "crop" in chosen:
                index = order[:num_cropped]
                cropped = tf.image.crop_and_resize(
                    images, tf.gather(params["crop"], index), index, [height, width]
                )
                x = tf.concat([cropped, x], axis=0)
            if "color_jitter" in chosen or "grayscale" in chosen:
                jitter = gray = None
                if "color_jitter" in chosen:
                    jitter = (subset("color_jitter"), tf.gather(params["color_jitter"], order))
                if "grayscale" in chosen:
                    gray = subset("grayscale")
                x = _apply_colour(
                    x, jitter, gray, "color_jitter" in chosen and self.contrast > 0
                )
            if "blur" in chosen or "low_resolution" in chosen:
                part = order[resample_start:resample_stop]
                matrices = [
                    self._resample_matrices(
                        size,
                        tf.gather(chosen["blur"], part) if "blur" in chosen else None,
                        tf.gather(params["blur"], part) if "blur" in chosen else None,
                        tf.gather(chosen["low_resolution"], part)
                        if "low_resolution" in chosen else None,
                        tf.gather(params["low_resolution"], part)
                        if "low_resolution" in chosen else None,
                    )
                    for size in ((height,) if height == width else (height, width))
                ]
                resampled = _apply_separable(
                    x[resample_start:resample_stop], matrices[0], matrices[-1]
                )
                x = tf.concat([x[:resample_start], resampled, x[resample_stop:]], axis=0)
            if "erasing" in chosen:
                noise_seed = tf.random.experimental.stateless_fold_in(seed, len(OP_ORDER))
                x = self._erase(
                    x, subset("erasing"), tf.gather(params["erasing"], order), noise_seed
                )
            # Every stage keeps pixels in [0, 255] (convex resampling weights, clipped jitter,
            # fills in range) up to float rounding, so `+ 0.5` then truncation rounds safely.
            augmented = tf.cast(x + 0.5, tf.uint8)
            # Back into batch order: gather from [original batch; augmented subset].
            inverse = tf.scatter_nd(order[:, None], tf.range(tf.shape(order)[0]), [batch])
            position = tf.where(selected, batch + inverse, tf.range(batch))
            return tf.gather(tf.concat([images, augmented], axis=0), position)

        output = tf.cond(tf.reduce_any(selected), augment, lambda: images)
        output.set_shape(images.shape)
        return output

    # ---- random parameters -----------------------------------------------------------------

    def _check_image_size(self, height, width):
        side = min(height, width)
        if self.blur > 0 and _blur_radius(self.blur_sigma[1]) >= side:
            raise ValueError(
                f"`blur_sigma` max {self.blur_sigma[1]} needs a kernel radius "
                f"{_blur_radius(self.blur_sigma[1])} smaller than the image ({height}x{width})"
            )
        if self.low_resolution > 0 and self.low_resolution_size[1] > side:
            raise ValueError(
                f"`low_resolution_size` max {self.low_resolution_size[1]} must be <= the image "
                f"size ({height}x{width})"
            )

    def _crop_boxes(self, u, height, width):
        """Normalised crop_and_resize boxes (B, 4) from the uniform draws ``u``."""
        hf, wf = float(height), float(width)
        low, high = self.crop_scale
        area = low + (high - low) * u[:, 1 : 1 + _ATTEMPTS]
        ratio = tf.exp(_log_uniform(u[:, 1 + _ATTEMPTS : 1 + 2 * _ATTEMPTS], self.crop_ratio))
        # Fractions of height and width with pixel area fraction `area`, pixel w/h = `ratio`.
        aspect = hf / wf  # a Python float: exactly 1.0 for square images, in any mode
        box_w = tf.sqrt(area * ratio * aspect)
        box_h = tf.sqrt(area / ratio / aspect)
        box_h, box_w, found = _first_fit((box_h <= 1.0) & (box_w <= 1.0), box_h, box_w)
        box_h = tf.where(found, box_h, 1.0)
        box_w = tf.where(found, box_w, 1.0)
        top = u[:, 1 + 2 * _ATTEMPTS] * (1.0 - box_h)
        left = u[:, 2 + 2 * _ATTEMPTS] * (1.0 - box_w)
        # crop_and_resize puts its first and last samples on the box corners (normalised by
        # size - 1); aiming them at the first and last pixel centres of the crop keeps every
        # sample inside the image (outside ones would read the fill value).
        # Constants folded in Python: graph-mode rewrites of `a * b / c` would otherwise change
        # the last bit of a box and make graph and eager outputs differ by a grey level.
        y_scale, x_scale = hf / (hf - 1.0), wf / (wf - 1.0)
        return tf.stack(
            [
                top * y_scale,
                left * x_scale,
                (top + box_h) * y_scale - 1.0 / (hf - 1.0),
                (left + box_w) * x_scale - 1.0 / (wf - 1.0),
            ],
            axis=1,
        )

    def _jitter_factors(self, u):
        """(B, 4): brightness, contrast, saturation factors and hue shift in turns."""
        columns = []
        for column, strength in enumerate((self.brightness, self.contrast, self.saturation), 1):
            low = max(0.0, 1.0 - strength)
            columns.append(low + (1.0 + strength - low) * u[:, column])
        columns.append((2.0 * u[:, 4] - 1.0) * self.hue)
        return tf.stack(columns, axis=1)

    def _erasing_rectangles(self, u, height, width):
        """(B, 4) top, left, height, width in pixels, and whether a candidate fitted."""
        hf, wf = float(height), float(width)
        total = hf * wf
        low, high = self.erasing_scale
        area = (low + (high - low) * u[:, 1 : 1 + _ATTEMPTS]) * total
        ratio = tf.exp(_log_uniform(u[:, 1 + _ATTEMPTS : 1 + 2 * _ATTEMPTS], self.erasing_ratio))
        rect_h = tf.round(tf.sqrt(area * ratio))
        rect_w = tf.round(tf.sqrt(area / ratio))
        # Checked after rounding to whole pixels, so the erased area really is in range.
        fraction = rect_h * rect_w / total
        fits = (
            (rect_h >= 1.0) & (rect_h < hf) & (rect_w >= 1.0) & (rect_w < wf)
            & (fraction >= low) & (fraction <= high)
        )
        rect_h, rect_w, found = _first_fit(fits, rect_h, rect_w)
        top = tf.minimum(tf.floor(u[:, 1 + 2 * _ATTEMPTS] * (hf - rect_h + 1.0)), hf - rect_h)
        left = tf.minimum(tf.floor(u[:, 2 + 2 * _ATTEMPTS] * (wf - rect_w + 1.0)), wf - rect_w)
        return tf.stack([top, left, rect_h, rect_w], axis=1), found

    # ---- transforms (float32 pixels in [0, 255]) -------------------------------------------

    def _resample_matrices(self, size, blur_chosen, sigma, low_chosen, size_index):
        """(n, size, size) per-sample blur-then-low-resolution matrices along one axis."""
        matrix = None
        if blur_chosen is not None:
            radius = _blur_radius(self.blur_sigma[1])
            taps = tf.range(-radius, radius + 1, dtype=tf.float32)
            weights = tf.exp(-0.5 * tf.square(taps[None, :] / sigma[:, None]))
            weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
            # A one-hot centre tap is the identity: samples chosen only for low resolution.
            weights = tf.where(blur_chosen[:, None], weights, tf.one_hot(radius, 2 * radius + 1))
            shifts = tf.constant(self._table("blur", size))  # (taps, size * size)
            matrix = tf.reshape(tf.matmul(weights, shifts), [-1, size, size])
        if low_chosen is not None:
            table = tf.constant(self._table("low_resolution", size))  # last one: identity
            index = tf.where(low_chosen, size_index, table.shape[0] - 1)
            low = tf.gather(table, index)
            matrix = low if matrix is None else tf.matmul(low, matrix)
        return matrix

    def _table(self, kind, size):
        """Constant NumPy tables, built once per image size (and per range, should it change)."""
        key = (kind, size, self.blur_sigma if kind == "blur" else self.low_resolution_size)
        if key not in self._tables:
            if kind == "blur":
                radius = _blur_radius(self.blur_sigma[1])
                table = np.stack(
                    [_reflected_shift(size, shift) for shift in range(-radius, radius + 1)]
                ).reshape(2 * radius + 1, size * size)
            else:
                low, high = self.low_resolution_size
                table = np.stack(
                    [_down_up_matrix(size, side) for side in range(low, high + 1)]
                    + [np.eye(size, dtype=np.float32)]
                )
            self._tables[key] = table.astype(np.float32)
        return self._tables[key]

    def _erase(self, x, chosen, rects, noise_seed):
        def erase():
            n, height, width = tf.shape(x)[0], x.shape[1], x.shape[2]
            top, left, rect_h, rect_w = tf.unstack(rects, axis=1)
            rows = tf.range(height, dtype=tf.float32)[None, :]
            cols = tf.range(width, dtype=tf.float32)[None, :]
            in_rows = (rows >= top[:, None]) & (rows < (top + rect_h)[:, None]) & chosen[:, None]
            in_cols = (cols >= left[:, None]) & (cols < (left + rect_w)[:, None])
            # Working on (n, H, W * 3) keeps the select 3-D (4-D broadcasting is much slower).
            inside = in_rows[:, :, None] & tf.repeat(in_cols, 3, axis=1)[:, None, :]
            flat = tf.reshape(x, [n, height, width * 3])
            if self.erasing_value is None:
                fill = tf.floor(
                    tf.random.stateless_uniform(
                        [n, height, width * 3], seed=noise_seed, maxval=256.0
                    )
                )
            else:
                fill = tf.constant(float(self.erasing_value))
            return tf.reshape(tf.where(inside, fill, flat), tf.shape(x))

        return tf.cond(tf.reduce_any(chosen), erase, lambda: x)


# ---- helpers ---------------------------------------------------------------------------------


def _flip(images, chosen):
    shape = tf.shape(images)
    # Reversing a (rows, W, 3) view is several times faster than tf.reverse on the 4-D batch,
    # and selecting by a gather is faster than a broadcast tf.where.
    flipped = tf.reshape(tf.reverse(tf.reshape(images, [-1, shape[2], 3]), [1]), shape)
    index = tf.range(shape[0])
    output = tf.gather(
        tf.concat([images, flipped], axis=0), tf.where(chosen, index + shape[0], index)
    )
    output.set_shape(images.shape)
    return output


def _apply_colour(x, jitter, gray, contrast_offset):
    """Colour jitter then grayscale as one affine map per sample, clipped once at the end."""
    n = tf.shape(x)[0]
    eye = tf.eye(3, batch_shape=[n])
    luma = tf.constant(LUMA_WEIGHTS, tf.float32)
    to_gray = tf.ones([3, 1]) * luma[None, :]  # every channel := luma
    ones = tf.ones([n])
    brightness = contrast = ones
    matrix = eye
    if jitter is not None:
        chosen, factors = jitter
        brightness = tf.where(chosen, factors[:, 0], 1.0)
        contrast = tf.where(chosen, factors[:, 1], 1.0)
        saturation = tf.where(chosen, factors[:, 2], 1.0)[:, None, None]
        angle = tf.where(chosen, 2.0 * math.pi * factors[:, 3], 0.0)
        # Hue as a rotation of the YIQ chroma plane (luma kept): a linear map, where an HSV
        # round trip would cost ~10x more. Built as I + T^-1 (R - I) T so angle 0 is exactly I.
        cos, sin, zero = tf.cos(angle) - 1.0, tf.sin(angle), tf.zeros([n])
        rotation = tf.reshape(
            tf.stack([zero, zero, zero, zero, cos, -sin, zero, sin, cos], axis=1), [n, 3, 3]
        )
        hue = eye + tf.matmul(
            tf.constant(_YIQ_INVERSE)[None], tf.matmul(rotation, tf.constant(_YIQ)[None])
        )
        matrix = tf.matmul(hue, saturation * eye + (1.0 - saturation) * to_gray)
    if gray is not None:
        matrix = tf.matmul(tf.where(gray[:, None, None], to_gray, eye), matrix)
    # Brightness b, contrast c around the mean luma m of the brightened image, then `matrix`:
    # x -> matrix (c b x + (1 - c) b m).
    flat = tf.reshape(x, [n, -1, 3])
    flat = tf.matmul(flat, (contrast * brightness)[:, None, None] * matrix, transpose_b=True)
    if contrast_offset:
        mean_luma = tf.reduce_sum(tf.reduce_mean(x, axis=[1, 2]) * luma, axis=1)
        offset = (1.0 - contrast) * brightness * mean_luma
        flat = flat + (offset[:, None] * tf.reduce_sum(matrix, axis=2))[:, None, :]
    if jitter is not None:
        # Grayscale alone keeps pixels in range (the luma weights sum to <= 1); jitter may not.
        flat = tf.clip_by_value(flat, 0.0, 255.0)
    return tf.reshape(flat, tf.shape(x))


def _apply_separable(x, row_matrices, col_matrices):
    """Per-sample ``R @ image @ C^T`` on each channel of (n, H, W, 3), as batched matmuls."""
    n, height, width = tf.shape(x)[0], x.shape[1], x.shape[2]
    y = tf.matmul(row_matrices, tf.reshape(x, [n, height, width * 3]))
    # Small per-row transposes (W, 3) -> (3, W) instead of a 4-D transpose of the batch.
    y = tf.linalg.matrix_transpose(tf.reshape(y, [n * height, width, 3]))
    y = tf.matmul(tf.reshape(y, [n, height * 3, width]), col_matrices, transpose_b=True)
    y = tf.linalg.matrix_transpose(tf.reshape(y, [n * height, 3, width]))
    return tf.reshape(y, [n, height, width, 3])


def _first_fit(fits, first, second):
    """The first candidate (column) that fits per row, and whether any did."""
    pick = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    found = tf.reduce_any(fits, axis=1)
    first = tf.gather(first, pick, axis=1, batch_dims=1)
    second = tf.gather(second, pick, axis=1, batch_dims=1)
    return first, second, found


def _blur_radius(max_sigma):
    return max(1, math.ceil(3.0 * max_sigma))


def _reflected_shift(size, shift):
    """(size, size) 0/1 matrix picking pixel ``i + shift`` for output ``i``, borders reflected."""
    matrix = np.zeros((size, size), np.float32)
    for i in range(size):
        j = i + shift
        j = -j if j < 0 else j
        j = 2 * (size - 1) - j if j > size - 1 else j
        matrix[i, j] = 1.0
    return matrix


def _log_uniform(u, bounds):
    low, high = math.log(bounds[0]), math.log(bounds[1])
    return low + (high - low) * u


def _down_up_matrix(size, low_size):
    """(size, size) matrix of an area downscale to ``low_size`` then a bilinear upscale back."""
    down = np.zeros((low_size, size), np.float64)
    step = size / low_size
    for i in range(low_size):
        start, stop = i * step, (i + 1) * step
        for j in range(int(math.floor(start)), min(size, int(math.ceil(stop)))):
            down[i, j] = (min(stop, j + 1) - max(start, j)) / step
    up = np.zeros((size, low_size), np.float64)
    for i in range(size):
        # Half-pixel centres, as tf.image.resize's bilinear.
        source = min(max((i + 0.5) * low_size / size - 0.5, 0.0), low_size - 1.0)
        below = int(math.floor(source))
        above = min(below + 1, low_size - 1)
        up[i, below] += 1.0 - (source - below)
        up[i, above] += source - below
    return (up @ down).astype(np.float32)


# ---- argument checks -------------------------------------------------------------------------


def _number(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"`{name}` must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}")
    return value


def _probability(name, value):
    value = _number(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"`{name}` must be in [0, 1], got {value}")
    return value


def _strength(name, value, high=None):
    value = _number(name, value)
    if value < 0 or (high is not None and value > high):
        bounds = f"in [0, {high}]" if high is not None else ">= 0"
        raise ValueError(f"`{name}` must be {bounds}, got {value}")
    return value


def _pair(name, value, low, high=None, integer=False, high_open=False):
    """(min, max) with low < min <= max <= high (integers: low <= min)."""
    kind = "integers" if integer else "numbers"
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"`{name}` must be a pair (min, max) of {kind}, got {value!r}")
    if integer:
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in value):
            raise ValueError(f"`{name}` must be a pair (min, max) of integers, got {value!r}")
        first, second = int(value[0]), int(value[1])
        if first < low:
            raise ValueError(f"`{name}` min must be >= {low}, got {value!r}")
    else:
        first, second = (_number(name, v) for v in value)
        if first <= low:
            raise ValueError(f"`{name}` min must be > {low}, got {value!r}")
    if first > second:
        raise ValueError(f"`{name}` min must be <= max, got {value!r}")
    if high is not None and (second >= high if high_open else second > high):
        raise ValueError(
            f"`{name}` max must be {'<' if high_open else '<='} {high}, got {value!r}"
        )
    return (first, second)


def _split_items(text):
    """Split on commas outside brackets, so ``blur_sigma=(0.1,2)`` stays one item."""
    items, depth, current = [], 0, []
    for char in text:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def _parse_value(name, value, text):
    where = f"augmentation option `{name}` in {text!r}"
    try:
        if name in _PAIRS:
            inner = value.strip()
            if inner[:1] in "([" and inner[-1:] in ")]":
                inner = inner[1:-1]
            parts = [p.strip() for p in inner.replace(":", ",").split(",")]
            if len(parts) != 2:
                raise ValueError
            if name == "low_resolution_size":
                return (int(parts[0]), int(parts[1]))
            return (float(parts[0]), float(parts[1]))
        if name == "erasing_value" and value.lower() in ("none", "noise", "random"):
            return None
        return float(value)
    except ValueError:
        expected = (
            "`min:max`" + (" integers" if name == "low_resolution_size" else " numbers")
            if name in _PAIRS
            else "a number" + (" or `noise`" if name == "erasing_value" else "")
        )
        raise ValueError(f"{where}: expected {expected}, got {value!r}") from None
