"""Whether a trained network can be stored in float16: the largest output change when its weights are rounded."""
import numpy as np
import tensorflow as tf


def float16_output_error(model, inputs) -> float:
    """Largest absolute difference of ``model(inputs)`` (every output tensor) between its float32 weights and the
    same weights rounded to float16. The weights are restored afterwards.

    Args:
      model: a built Keras model with float32 weights.
      inputs: what ``model`` is called with (a tensor or a dict).
    """
    reference = tf.nest.flatten(model(inputs, training=False))
    saved = [w.numpy() for w in model.weights]
    try:
        model.set_weights([w.astype(np.float16).astype(np.float32) if w.dtype == np.float32 else w for w in saved])
        rounded = tf.nest.flatten(model(inputs, training=False))
    finally:
        model.set_weights(saved)
    return max(float(tf.reduce_max(tf.abs(tf.cast(a, tf.float32) - tf.cast(b, tf.float32))))
               for a, b in zip(reference, rounded))
