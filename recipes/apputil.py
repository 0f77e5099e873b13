"""Small helpers shared by the recipe apps."""


def quiet_tensorflow():
    """Keeps the converter's INFO chatter out of the recipe's progress output."""
    import tensorflow as tf
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("ERROR")
