"""BiT upstream preprocessing: an inception crop and a random flip for training, a plain resize for
evaluation; pixels leave as float32 in [0, 1] (the model maps them to [-1, 1] itself).

Randomness is stateless and keyed by a per-example seed, so a pipeline gives the same images whatever
its parallelism.
"""

import tensorflow as tf

# BiT's crop: between 5% and 100% of the image area, aspect ratio within [3/4, 4/3].
AREA_RANGE = (0.05, 1.0)
ASPECT_RANGE = (3 / 4, 4 / 3)


def _to_unit_float(image):
    return tf.image.convert_image_dtype(image, tf.float32)  # uint8 -> [0, 1]


def inception_crop(image, seed, area_range=AREA_RANGE, aspect_range=ASPECT_RANGE):
    """A random crop of `image` [H, W, C] covering `area_range` of its area; `seed` is int32 [2]."""
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image),
        bounding_boxes=tf.zeros([1, 0, 4]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=aspect_range,
        area_range=area_range,
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    return tf.slice(image, begin, size)


def train_preprocess(image, image_size, seed, min_area=AREA_RANGE[0], flip=True):
    """Inception crop (at least `min_area` of the image), resize to `image_size`, random horizontal
    flip (if `flip`); float32 [S, S, 3] in [0, 1]."""
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    image = inception_crop(image, seeds[0], area_range=(min_area, 1.0))
    image = tf.image.resize(_to_unit_float(image), [image_size, image_size])
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seeds[1])
    return tf.clip_by_value(image, 0.0, 1.0)


def eval_preprocess(image, image_size):
    """Resize the whole image to `image_size`; float32 [S, S, 3] in [0, 1]."""
    image = tf.image.resize(_to_unit_float(image), [image_size, image_size])
    return tf.clip_by_value(image, 0.0, 1.0)
