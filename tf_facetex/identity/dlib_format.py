"""Reader for dlib's binary serialisation of DNN models (``*.dat`` written by ``dlib::serialize(net)``).

Written from the format as dlib defines it (``dlib/serialize.h``, ``dlib/float_details.h``,
``dlib/dnn/core.h``, ``dlib/dnn/layers.h``, ``dlib/dnn/tensor.h``, ``dlib/dnn/input.h``); no dlib code
is used or needed at run time.

How a network is laid out in the stream
---------------------------------------
A dlib network is a nested C++ type, ``loss<layer<layer<...<input>>>>``, and ``serialize`` recurses
*before* writing each wrapper's own fields. So the stream is:

1. the loss wrapper: its version (int), then the loss details (a version string such as
   ``"loss_metric_2"`` and the loss's fields);
2. one version int per wrapper from the outermost layer inwards: ``2`` for an ``add_layer``
   (a computational layer), ``1`` for an ``add_tag_layer``/``add_skip_layer`` (pure wiring: tags and
   skips carry no data, so *the graph topology is not in the file*: it comes from the network type,
   which the reader of the weights must know), and ``2``/``3`` for the innermost ``add_layer`` that
   sits on the input layer;
3. the input layer (e.g. ``"input_rgb_image_sized"``, the per-channel means, rows, cols);
4. for every computational layer from the input upwards: its details (version string + fields,
   including a parameter tensor) followed by the wrapper's trailer (three bools and two or three
   scratch tensors, empty in saved models).

Primitive encodings
-------------------
* integers: one control byte (low 4 bits = number of payload bytes, bit 7 = negative), then that
  many little-endian magnitude bytes;
* floats/doubles: ``float_details``: an int64 mantissa then an int16 exponent (value =
  mantissa * 2**exponent); exponents 32000/32001/32002 mean +inf/-inf/nan;
* bools: the ASCII characters ``'1'``/``'0'``; strings: an integer length then the bytes;
* tensors (version 2): version, then num_samples, k, nr, nc, then raw little-endian float32 data
  (version 1 used the float encoding above for each element);
* alias tensors (views into a layer's ``params``): version 1, then num_samples, k, nr, nc.
"""
import dataclasses
import math
import os
import pathlib

import numpy as np

from tf_facetex.errors import AssetError

_FLOAT_INF, _FLOAT_NINF, _FLOAT_NAN = 32000, 32001, 32002


class DlibFormatError(ValueError):
    """The byte stream does not follow dlib's serialisation format (message says what and where)."""


@dataclasses.dataclass(frozen=True)
class DlibLayer:
    """One computational layer as stored in the file.

    Attributes:
      kind: ``"con"``, ``"affine"``, ``"relu"``, ``"max_pool"``, ``"avg_pool"``, ``"add_prev"``, ``"fc"``.
      version: the version string dlib wrote (``"con_4"``, ``"affine_"``, ...).
      attrs: hyper-parameters (kernel size, stride, padding, mode, ...).
      weights: named float32 arrays in dlib's own layouts:
        con: ``filters`` [O, I, kh, kw], ``biases`` [O];  affine: ``gamma``/``beta`` [C] (conv mode)
        or [C*H*W] (fc mode);  fc: ``weights`` [in, out], ``biases`` [out] (when present).
    """
    kind: str
    version: str
    attrs: dict
    weights: dict


@dataclasses.dataclass(frozen=True)
class DlibNet:
    """A deserialised dlib network: loss and input settings plus the computational layers.

    Attributes:
      loss: ``{"version": str, ...fields}`` (e.g. margin and distance_threshold for loss_metric).
      input: ``{"version": str, "mean_rgb": (r, g, b), "rows": int, "cols": int}`` for RGB inputs.
      layers: computational layers ordered from the input to the output.
      wrapper_versions: version ints of the wrappers, outermost first (len = layers + tags + skips).
    """
    loss: dict
    input: dict
    layers: list
    wrapper_versions: list

    def kinds(self):
        """Layer kinds from input to output (handy for checking a file against an architecture)."""
        return [layer.kind for layer in self.layers]

    @property
    def num_wiring_wrappers(self):
        """How many tag/skip wrappers the network has (they hold no data)."""
        return len(self.wrapper_versions) - len(self.layers)


class _ByteStream:
    """Cursor over the file's bytes with dlib's primitive decoders. Every read checks bounds."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.pos = 0

    def _take(self, n, what):
        if n < 0 or self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of data reading {what} at byte {self.pos} "
                                  f"(needs {n} bytes, {len(self.data) - self.pos} left)")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def at_end(self):
        return self.pos >= len(self.data)

    def read_int(self, what="integer"):
        control = self._take(1, what)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"invalid integer control byte 0x{control:02x} for {what} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size, what), "little") if size else 0
        return -value if control & 0x80 else value

    def read_float(self, what="float"):
        mantissa = self.read_int(what + " mantissa")
        exponent = self.read_int(what + " exponent")
        if exponent == _FLOAT_INF:
            return float("inf")
        if exponent == _FLOAT_NINF:
            return float("-inf")
        if exponent == _FLOAT_NAN:
            return float("nan")
        return float(np.ldexp(float(mantissa), exponent))

    def read_bool(self, what="bool"):
        char = bytes(self._take(1, what))
        if char not in (b"0", b"1"):
            raise DlibFormatError(f"invalid bool {char!r} for {what} at byte {self.pos - 1}")
        return char == b"1"

    def read_string(self, what="string", max_len=256):
        length = self.read_int(what + " length")
        if not 0 <= length <= max_len:
            raise DlibFormatError(f"implausible {what} length {length} at byte {self.pos}")
        raw = bytes(self._take(length, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError as err:
            raise DlibFormatError(f"non-ASCII {what} {raw[:32]!r} at byte {self.pos - length}") from err

    def peek_string(self, max_len=64):
        """The string starting here, or None if the bytes here are not a plausible ASCII string."""
        start = self.pos
        try:
            return self.read_string(max_len=max_len)
        except DlibFormatError:
            return None
        finally:
            self.pos = start

    def _dims(self, what):
        dims = tuple(self.read_int(what + " dims") for _ in range(4))
        if any(d < 0 for d in dims):
            raise DlibFormatError(f"negative {what} dimensions {dims} at byte {self.pos}")
        return dims

    def read_tensor(self, what="tensor"):
        """A ``resizable_tensor``: returns a float32 array of shape [num_samples, k, nr, nc]."""
        version = self.read_int(what + " version")
        dims = self._dims(what)
        count = math.prod(dims)
        if count > len(self.data) - self.pos:        # every element takes at least one byte
            raise DlibFormatError(f"{what} of shape {dims} cannot fit in the {len(self.data) - self.pos} bytes left")
        if version == 2:
            raw = self._take(4 * count, what + " data")
            return np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(dims)
        if version == 1:
            values = [self.read_float(what + " element") for _ in range(count)]
            return np.asarray(values, np.float32).reshape(dims)
        raise DlibFormatError(f"unsupported {what} version {version} at byte {self.pos}")

    def read_alias_tensor(self, what="alias tensor"):
        """An ``alias_tensor`` (a shape-only view into ``params``): returns its 4 dims."""
        version = self.read_int(what + " version")
        if version != 1:
            raise DlibFormatError(f"unsupported {what} version {version} at byte {self.pos}")
        return self._dims(what)


def _slice_params(params, shapes, layer):
    """Splits a layer's flat ``params`` into consecutive alias views. shapes: list of (name, dims)."""
    flat = params.reshape(-1)
    out, offset = {}, 0
    for name, dims in shapes:
        size = math.prod(dims)
        if size == 0:
            continue
        if offset + size > flat.size:
            raise DlibFormatError(f"{layer}: params hold {flat.size} values, views need more ({name} {dims})")
        out[name] = flat[offset:offset + size].reshape(dims)
        offset += size
    if offset != flat.size:
        raise DlibFormatError(f"{layer}: params hold {flat.size} values but views use {offset}")
    return out


def _read_con(s, version):
    if version not in ("con_4", "con_5", "con_6"):
        raise DlibFormatError(f"unsupported convolution version {version!r}")
    params = s.read_tensor("con params")
    attrs = {"num_filters": s.read_int(), "kernel": (s.read_int(), s.read_int()), "stride": (s.read_int(), s.read_int()),
             "padding": (s.read_int(), s.read_int())}
    filters_dims = s.read_alias_tensor("con filters")
    biases_dims = s.read_alias_tensor("con biases")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier",
                 "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        attrs[name] = s.read_float(name)
    attrs["use_bias"] = s.read_bool("use_bias") if version in ("con_5", "con_6") else True
    attrs["use_relu"] = s.read_bool("use_relu") if version == "con_6" else False
    views = _slice_params(params, [("filters", filters_dims), ("biases", biases_dims)], version)
    filters = views["filters"]                                   # [O, I, kh, kw]
    if filters.shape[0] != attrs["num_filters"] or tuple(filters.shape[2:]) != attrs["kernel"]:
        raise DlibFormatError(f"{version}: filter view {filters.shape} disagrees with "
                              f"num_filters={attrs['num_filters']} kernel={attrs['kernel']}")
    weights = {"filters": filters}
    if "biases" in views:
        weights["biases"] = views["biases"].reshape(-1)
    return DlibLayer("con", version, attrs, weights)


def _read_affine(s, version):
    if version not in ("affine_", "affine_2"):
        raise DlibFormatError(f"unsupported affine version {version!r} (batch-norm layers are not supported)")
    params = s.read_tensor("affine params")
    gamma_dims = s.read_alias_tensor("affine gamma")
    beta_dims = s.read_alias_tensor("affine beta")
    mode = s.read_int("affine mode")
    attrs = {"mode": {0: "conv", 1: "fc"}.get(mode, mode)}
    attrs["disabled"] = s.read_bool("affine disabled") if version == "affine_2" else False
    views = _slice_params(params, [("gamma", gamma_dims), ("beta", beta_dims)], version)
    return DlibLayer("affine", version, attrs, {k: v.reshape(-1) for k, v in views.items()})


def _read_pool(s, version, kind):
    if version != kind + "_2":
        raise DlibFormatError(f"unsupported {kind} version {version!r}")
    attrs = {"window": (s.read_int(), s.read_int()), "stride": (s.read_int(), s.read_int()), "padding": (s.read_int(), s.read_int())}
    # window (0, 0) is dlib's "pool over the whole input" (avg_pool_everything / max_pool_everything)
    attrs["global"] = attrs["window"] == (0, 0)
    return DlibLayer(kind, version, attrs, {})


def _read_fc(s, version):
    if version not in ("fc_2", "fc_3"):
        raise DlibFormatError(f"unsupported fully-connected version {version!r}")
    attrs = {"num_outputs": s.read_int(), "num_inputs": s.read_int()}
    params = s.read_tensor("fc params")
    weights_dims = s.read_alias_tensor("fc weights")
    biases_dims = s.read_alias_tensor("fc biases")
    attrs["bias_mode"] = {0: "has_bias", 1: "no_bias"}.get(s.read_int("fc bias mode"), "unknown")
    for name in ("learning_rate_multiplier", "weight_decay_multiplier",
                 "bias_learning_rate_multiplier", "bias_weight_decay_multiplier"):
        attrs[name] = s.read_float(name)
    if version == "fc_3":
        attrs["use_bias"] = s.read_bool("use_bias")
    views = _slice_params(params, [("weights", weights_dims), ("biases", biases_dims)], version)
    weights = {"weights": views["weights"].reshape(attrs["num_inputs"], attrs["num_outputs"])}
    if "biases" in views:
        weights["biases"] = views["biases"].reshape(-1)
    return DlibLayer("fc", version, attrs, weights)


def _read_layer_details(s):
    start = s.pos
    version = s.read_string("layer version")
    if version.startswith("con_"):
        return _read_con(s, version)
    if version.startswith("affine_"):
        return _read_affine(s, version)
    if version.startswith("max_pool_"):
        return _read_pool(s, version, "max_pool")
    if version.startswith("avg_pool_"):
        return _read_pool(s, version, "avg_pool")
    if version.startswith("fc_"):
        return _read_fc(s, version)
    if version == "relu_":
        return DlibLayer("relu", version, {}, {})
    if version == "add_prev_":
        return DlibLayer("add_prev", version, {}, {})
    raise DlibFormatError(f"unsupported layer type {version!r} at byte {start}")


def _read_input(s):
    version = s.read_string("input layer version")
    if version not in ("input_rgb_image_sized", "input_rgb_image"):
        raise DlibFormatError(f"unsupported input layer {version!r}")
    info = {"version": version, "mean_rgb": (s.read_float("avg_red"), s.read_float("avg_green"), s.read_float("avg_blue"))}
    if version == "input_rgb_image_sized":
        info["rows"], info["cols"] = s.read_int("rows"), s.read_int("cols")
    return info


def _read_loss(s):
    version = s.read_string("loss version")
    if version == "loss_metric_2":
        return {"version": version, "margin": s.read_float("margin"), "distance_threshold": s.read_float("dist_thresh")}
    if version == "loss_metric_":
        return {"version": version}
    raise DlibFormatError(f"unsupported loss layer {version!r}")


def _read_add_layer_trailer(s, num_tensors):
    for what in ("this_layer_setup_called", "gradient_input_is_stale", "get_output_and_gradient_input_disabled"):
        s.read_bool(what)
    for _ in range(num_tensors):
        s.read_tensor("scratch tensor")


def parse_dlib_net(data: bytes) -> DlibNet:
    """Parses the bytes of a dlib ``loss<...<input>>`` network file.

    Raises:
      DlibFormatError: on any deviation from the format (truncation, bad control bytes, unknown layer
        types, trailing bytes, inconsistent wrapper counts).
    """
    s = _ByteStream(data)
    loss_version = s.read_int("loss wrapper version")
    if loss_version != 1:
        raise DlibFormatError(f"not a dlib network: loss wrapper version {loss_version} (expected 1)")
    loss = _read_loss(s)

    # Wrapper versions run until the input layer's name; ints 1..3 can never be mistaken for the
    # length of a name like "input_rgb_image_sized".
    wrapper_versions = []
    while True:
        name = s.peek_string()
        if name is not None and name.startswith("input"):
            break
        version = s.read_int("wrapper version")
        if version not in (1, 2, 3):
            raise DlibFormatError(f"unexpected wrapper version {version} at byte {s.pos}")
        wrapper_versions.append(version)
        if len(wrapper_versions) > 100000:
            raise DlibFormatError("no input layer found")
    if not wrapper_versions or wrapper_versions[-1] not in (2, 3):
        raise DlibFormatError("the innermost layer is not an add_layer on the input (version 2 or 3)")
    input_info = _read_input(s)

    # Innermost add_layer (on the input): details, bools, x_grad, cached_output, grad_final
    # (+ sample expansion factor in version 3).
    layers = [_read_layer_details(s)]
    _read_add_layer_trailer(s, 3)
    if wrapper_versions[-1] == 3:
        s.read_int("sample_expansion_factor")
    # Every other add_layer (version 2): details, bools, x_grad, cached_output, params_grad.
    while not s.at_end():
        layers.append(_read_layer_details(s))
        _read_add_layer_trailer(s, 3)
    num_add_layers = sum(1 for v in wrapper_versions[:-1] if v == 2) + 1
    if num_add_layers != len(layers):
        raise DlibFormatError(f"{len(layers)} layers stored but the wrapper versions announce {num_add_layers} "
                              "(files written by dlib before add_layer version 2 are not supported)")
    return DlibNet(loss=loss, input=input_info, layers=layers, wrapper_versions=wrapper_versions)


def read_dlib_net(path) -> DlibNet:
    """Reads a dlib DNN ``.dat`` file (e.g. ``dlib_face_recognition_resnet_model_v1.dat``).

    Raises:
      AssetError: the file is missing, unreadable, compressed (``.bz2`` as downloaded from dlib.net), or
        not a valid dlib network; the one-line message names the file.
    """
    path = pathlib.Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise AssetError(f"{path}: dlib model file not found")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise AssetError(f"{path}: cannot read dlib model file ({err.strerror or err})") from err
    if data[:3] == b"BZh":
        raise AssetError(f"{path}: is bzip2-compressed; decompress it first (bunzip2)")
    try:
        return parse_dlib_net(data)
    except (ValueError, OverflowError) as err:     # DlibFormatError, or numbers no float32 array can take
        raise AssetError(f"{path}: not a valid dlib network file ({err})") from err
