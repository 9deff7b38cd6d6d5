"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1``) as a Keras 3 model.

The network (dlib's ``anet_type`` in ``examples/dnn_face_recognition_ex.cpp``), input 150x150 RGB:

    normalise: (rgb - mean_rgb) / 256                 mean_rgb = (122.782, 117.001, 104.298), from the file
    con 32 7x7 /2 (no padding) -> affine -> relu      150 -> 72
    max_pool 3x3 /2 (no padding)                      72 -> 35
    3 x residual(32)                                  35
    residual_down(64),  3 x residual(64)              35 -> 17
    residual_down(128), 2 x residual(128)             17 -> 8
    residual_down(256), 2 x residual(256)             8 -> 4 (see below)
    residual_down(256)                                4 -> 2 (see below)
    global average pool -> fc 128 (no bias)           the raw 128-d descriptor (not normalised)

    residual(x)      = relu(x + B(x, stride 1))
    residual_down(x) = relu(avg_pool_2x2/2(x) (+) B(x, stride 2))
    B(x, s)          = affine(con 3x3 /1 pad 1(relu(affine(con 3x3 /s(x)))))   (stride-2 convs: no padding)

``affine`` is batch norm folded into a per-channel ``x * gamma + beta``. ``(+)`` is dlib's ``add_prev``,
which adds tensors of *different* shapes by zero-extending both to the larger size in every dimension
(top-left aligned): it widens the shortcut's channels (32 -> 64, ...) with zeros, and at 8 -> 4 the
block branch is 3x3 while the pooled shortcut is 4x4 (and 1x1 vs 2x2 at the last step), so the block
result lands in the top-left corner. Reproducing that exactly is what makes the descriptors match.
"""
import numpy as np
import keras
from keras import layers, ops

from tf_facetex.errors import AssetError
from tf_facetex.identity.dlib_format import DlibNet, read_dlib_net

CHIP_SIZE = 150
DESCRIPTOR_DIM = 128
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
# dlib's threshold on the Euclidean distance between raw descriptors for "same person".
DLIB_SAME_PERSON_DISTANCE = 0.6

# (filters, downsample) for each residual block, from the input upwards.
DLIB_RESNET_BLOCKS = (
    ((32, False),) * 3
    + ((64, True),) + ((64, False),) * 3
    + ((128, True),) + ((128, False),) * 2
    + ((256, True),) + ((256, False),) * 2
    + ((256, True),)
)


def default_model_path():
    """The ``.dat`` shipped in the ``face_recognition_models`` pip package (AssetError if not installed)."""
    try:
        import face_recognition_models
    except ImportError as err:
        raise AssetError("face_recognition_models is not installed; pass the path of "
                         "dlib_face_recognition_resnet_model_v1.dat explicitly") from err
    return face_recognition_models.face_recognition_model_location()


def expected_layer_kinds(blocks=DLIB_RESNET_BLOCKS):
    """The computational layers dlib stores for this architecture, input to output (for checking a file)."""
    kinds = ["con", "affine", "relu", "max_pool"]
    for _, downsample in blocks:
        kinds += ["con", "affine", "relu", "con", "affine"] + (["avg_pool"] if downsample else []) + ["add_prev", "relu"]
    return kinds + ["avg_pool", "fc"]


@keras.saving.register_keras_serializable(package="tf_facetex")
class DlibInputNormalization(layers.Layer):
    """dlib's ``input_rgb_image``: ``(rgb - mean_rgb) / 256`` on [B, H, W, 3] RGB in [0, 255]."""

    def __init__(self, mean_rgb=DLIB_MEAN_RGB, **kwargs):
        super().__init__(**kwargs)
        self.mean_rgb = tuple(float(v) for v in mean_rgb)

    def call(self, rgb):
        return (rgb - ops.convert_to_tensor(self.mean_rgb, dtype=rgb.dtype)) / 256.0

    def get_config(self):
        return {**super().get_config(), "mean_rgb": self.mean_rgb}


@keras.saving.register_keras_serializable(package="tf_facetex")
class ChannelAffine(layers.Layer):
    """dlib's ``affine_`` (conv mode): ``x * gamma + beta`` per channel; [B, H, W, C] -> same."""

    def build(self, input_shape):
        channels = input_shape[-1]
        self.gamma = self.add_weight(name="gamma", shape=(channels,), initializer="ones")
        self.beta = self.add_weight(name="beta", shape=(channels,), initializer="zeros")

    def call(self, x):
        return x * self.gamma + self.beta


@keras.saving.register_keras_serializable(package="tf_facetex")
class ZeroExtendAdd(layers.Layer):
    """dlib's ``add_prev``: the sum of two [B, H, W, C] tensors zero-extended (bottom/right/last channels)
    to their common maximum H, W, C. Shapes must be static."""

    def compute_output_shape(self, input_shapes):
        a, b = input_shapes
        return (a[0],) + tuple(max(x, y) for x, y in zip(a[1:], b[1:]))

    def call(self, inputs):
        a, b = inputs
        target = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

        def extend(x):
            pads = [[0, 0]] + [[0, t - s] for s, t in zip(x.shape[1:], target)]
            return ops.pad(x, pads) if any(p[1] for p in pads) else x

        return extend(a) + extend(b)


def _con(x, filters, kernel, stride, padding, name):
    """dlib ``con_``: explicit symmetric zero padding then a 'valid' strided convolution (cross-correlation)."""
    if padding:
        x = layers.ZeroPadding2D(padding, name=name + "_pad")(x)
    return layers.Conv2D(filters, kernel, strides=stride, padding="valid", name=name)(x)


def build_dlib_resnet(input_size=CHIP_SIZE, mean_rgb=DLIB_MEAN_RGB, blocks=DLIB_RESNET_BLOCKS,
                      descriptor_dim=DESCRIPTOR_DIM, name="dlib_face_resnet"):
    """Builds the architecture with untrained weights.

    Input: [B, input_size, input_size, 3] float RGB in [0, 255] (an aligned face chip).
    Output: [B, descriptor_dim] raw descriptors (dlib's scale: same person when Euclidean distance < 0.6).
    Layer names follow the file's computational-layer order: ``con_07``, ``affine_07``, ``add_prev_03``, ...
    """
    counters = {}

    def next_name(kind):
        counters[kind] = counters.get(kind, 0) + 1
        return f"{kind}_{counters[kind]:02d}"

    rgb = keras.Input((input_size, input_size, 3), name="chip_rgb")
    x = DlibInputNormalization(mean_rgb, name="input_normalization")(rgb)
    x = _con(x, blocks[0][0], 7, 2, 0, next_name("con"))
    x = ChannelAffine(name=next_name("affine"))(x)
    x = layers.ReLU(name=next_name("relu"))(x)
    x = layers.MaxPooling2D(3, 2, padding="valid", name=next_name("max_pool"))(x)
    for filters, downsample in blocks:
        stride = 2 if downsample else 1
        branch = _con(x, filters, 3, stride, 0 if downsample else 1, next_name("con"))
        branch = ChannelAffine(name=next_name("affine"))(branch)
        branch = layers.ReLU(name=next_name("relu"))(branch)
        branch = _con(branch, filters, 3, 1, 1, next_name("con"))
        branch = ChannelAffine(name=next_name("affine"))(branch)
        shortcut = layers.AveragePooling2D(2, 2, padding="valid", name=next_name("avg_pool"))(x) if downsample else x
        x = ZeroExtendAdd(name=next_name("add_prev"))([shortcut, branch])
        x = layers.ReLU(name=next_name("relu"))(x)
    x = layers.GlobalAveragePooling2D(name=next_name("avg_pool"))(x)
    descriptor = layers.Dense(descriptor_dim, use_bias=False, name=next_name("fc"))(x)
    return keras.Model(rgb, descriptor, name=name)


def _load_layer(model, target, name, stored, source):
    """Copies one stored layer into its Keras counterpart after checking kind-specific hyper-parameters."""
    if stored.kind == "con":
        filters = stored.weights["filters"]
        kernel = np.transpose(filters, (2, 3, 1, 0))
        if tuple(target.kernel.shape) != kernel.shape:
            raise AssetError(f"{source}: {name} kernel {kernel.shape} != model {tuple(target.kernel.shape)}")
        if tuple(target.strides) != tuple(stored.attrs["stride"]):
            raise AssetError(f"{source}: {name} stride {stored.attrs['stride']} != model {target.strides}")
        pad_layer = [l for l in model.layers if l.name == name + "_pad"]
        padding = tuple(pad_layer[0].padding[0]) if pad_layer else (0, 0)
        if padding[0] != stored.attrs["padding"][0] or stored.attrs["padding"][0] != stored.attrs["padding"][1]:
            raise AssetError(f"{source}: {name} padding {stored.attrs['padding']} != model {padding}")
        if stored.attrs["use_relu"]:
            raise AssetError(f"{source}: {name} has a fused relu (con_6), not supported")
        bias = stored.weights.get("biases", np.zeros(filters.shape[0], np.float32))
        target.set_weights([kernel, bias])
    elif stored.kind == "affine":
        if stored.attrs["mode"] != "conv" or stored.attrs["disabled"]:
            raise AssetError(f"{source}: {name} is not a per-channel (conv mode) affine layer")
        target.set_weights([stored.weights["gamma"], stored.weights["beta"]])
    elif stored.kind == "fc":
        if "biases" in stored.weights:
            raise AssetError(f"{source}: {name} has a bias; the model's fc has none")
        target.set_weights([stored.weights["weights"]])
    elif stored.kind in ("max_pool", "avg_pool"):
        window, stride, padding = stored.attrs["window"], stored.attrs["stride"], stored.attrs["padding"]
        if padding != (0, 0):
            raise AssetError(f"{source}: {name} has padding {padding}; only unpadded pooling is supported")
        if stored.attrs["global"]:
            if not isinstance(target, layers.GlobalAveragePooling2D):
                raise AssetError(f"{source}: {name} is a global pool but the model's is not")
        elif tuple(target.pool_size) != window or tuple(target.strides) != stride:
            raise AssetError(f"{source}: {name} window/stride {window}/{stride} != model "
                             f"{target.pool_size}/{target.strides}")


def load_dlib_weights(model, net: DlibNet, source="<dlib net>"):
    """Copies the weights of a parsed dlib file into a model from ``build_dlib_resnet``.

    dlib layouts -> Keras: con filters [O, I, kh, kw] -> kernel [kh, kw, I, O]; fc weights [in, out] are
    already Keras' Dense layout (dlib computes x @ W). Every layer's kind, kernel, stride and padding is
    checked against the model so a different architecture fails loudly instead of producing garbage.
    """
    expected = expected_layer_kinds()
    if net.kinds() != expected:
        raise AssetError(f"{source}: {len(net.layers)} layers of kinds {net.kinds()[:6]}... do not match "
                         f"dlib_face_recognition_resnet_model_v1 ({len(expected)} layers)")
    counters = {}
    for stored in net.layers:
        counters[stored.kind] = counters.get(stored.kind, 0) + 1
        name = f"{stored.kind}_{counters[stored.kind]:02d}"
        try:
            _load_layer(model, model.get_layer(name), name, stored, source)
        except ValueError as err:      # Keras shape mismatch in set_weights
            raise AssetError(f"{source}: {name}: {str(err).splitlines()[0]}") from err
    return model


def load_dlib_face_resnet(path=None):
    """The pretrained network: reads ``path`` (default: the face_recognition_models copy) with our own
    dlib-format reader and returns a Keras model (see ``build_dlib_resnet`` for inputs/outputs).

    Raises:
      AssetError: missing, truncated or malformed file, or a network of another architecture.
    """
    path = default_model_path() if path is None else path
    net = read_dlib_net(path)
    if net.input.get("version") != "input_rgb_image_sized":
        raise AssetError(f"{path}: input layer {net.input.get('version')!r}, expected input_rgb_image_sized")
    size = net.input["rows"]
    if net.input["cols"] != size:
        raise AssetError(f"{path}: non-square input {net.input['rows']}x{net.input['cols']}")
    model = build_dlib_resnet(input_size=size, mean_rgb=net.input["mean_rgb"])
    return load_dlib_weights(model, net, source=str(path))
