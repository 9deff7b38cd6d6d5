"""Identity networks: dlib .dat reader, Keras dlib ResNet vs dlib, chip alignment, gradients, ArcFace layout.

The dlib encoder is loaded once per module. The exhaustive real-photo comparison is in
tests/test_identity_slow.py (marked slow).
"""
import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_facetex.errors import AssetError
from tf_facetex.identity import alignment, dlib_format
from tf_facetex.identity.dlib_resnet import (DLIB_MEAN_RGB, ZeroExtendAdd, default_model_path, expected_layer_kinds,
                                             load_dlib_face_resnet)
from tf_facetex.identity.encoder import (ArcFaceIdentityEncoder, DlibIdentityEncoder, build_arcface_model,
                                         get_identity_encoder, identity_similarity, save_arcface_weights_h5)

dlib = pytest.importorskip("dlib")
face_recognition_models = pytest.importorskip("face_recognition_models")

# Real photos for the quick check: a small one, a large one (dlib's pyramid path), and the face whose
# TF-warped chip differed most from dlib's in the slow comparison.
REAL_PHOTOS = ("face_recognition/examples/obama_small.jpg", "deepface_unit/img1.jpg", "deepface_unit/img61.jpg")


@pytest.fixture(scope="module")
def encoder():
    return get_identity_encoder("dlib")


@pytest.fixture(scope="module")
def dlib_tools():
    return {
        "detector": dlib.get_frontal_face_detector(),
        "predictor": dlib.shape_predictor(face_recognition_models.pose_predictor_model_location()),
        "recognizer": dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location()),
    }


def _face(image, tools):
    """(dlib shape, landmarks [68, 2]) of the largest face."""
    boxes = tools["detector"](image, 0) or tools["detector"](image, 1)
    assert boxes, "dlib found no face"
    shape = tools["predictor"](image, max(boxes, key=lambda r: r.area()))
    return shape, np.array([[p.x, p.y] for p in shape.parts()], np.float64)


@pytest.fixture(scope="module")
def astronaut():
    import skimage.data
    return skimage.data.astronaut()


def _cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


# ----------------------------------------------------------------------------------------------------
# dlib format reader


def test_primitive_decoders():
    stream = dlib_format._ByteStream(b"\x00" b"\x01\x96" b"\x81\x11" b"\x02\x00\x01" b"10"
                                     b"\x03\x62\x90\xf5\x81\x11" b"\x01\x05con_4")
    assert [stream.read_int(), stream.read_int(), stream.read_int(), stream.read_int()] == [0, 150, -17, 256]
    assert stream.read_bool() is True and stream.read_bool() is False
    assert stream.read_float() == pytest.approx(122.782, abs=1e-4)     # 0xf59062 * 2**-17
    assert stream.read_string() == "con_4" and stream.at_end()
    with pytest.raises(dlib_format.DlibFormatError, match="end of data"):
        stream.read_int()


def test_reads_face_recognition_model_structure():
    net = dlib_format.read_dlib_net(default_model_path())
    assert net.kinds() == expected_layer_kinds()
    assert net.input["version"] == "input_rgb_image_sized" and (net.input["rows"], net.input["cols"]) == (150, 150)
    np.testing.assert_allclose(net.input["mean_rgb"], DLIB_MEAN_RGB, atol=1e-4)
    assert net.loss["distance_threshold"] == pytest.approx(0.6)
    assert net.num_wiring_wrappers == 22          # 10 residual blocks x tag1 + 4 down blocks x (tag1, tag2, skip1)
    first = net.layers[0]
    assert first.weights["filters"].shape == (32, 3, 7, 7) and first.attrs["stride"] == (2, 2)
    assert first.attrs["padding"] == (0, 0)
    assert net.layers[-1].weights["weights"].shape == (256, 128)
    assert all(np.isfinite(w).all() for layer in net.layers for w in layer.weights.values())


@pytest.fixture(scope="module")
def model_bytes():
    with open(default_model_path(), "rb") as handle:
        return handle.read()


@pytest.mark.parametrize("cut", [0, 5, 400, 0.5, -1])
def test_truncated_dat_gives_asset_error_naming_file(tmp_path, model_bytes, cut):
    keep = int(len(model_bytes) * cut) if isinstance(cut, float) else (len(model_bytes) + cut if cut < 0 else cut)
    path = tmp_path / "truncated_model.dat"
    path.write_bytes(model_bytes[:keep])
    with pytest.raises(AssetError) as info:
        load_dlib_face_resnet(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_random_bytes_missing_and_compressed_dat(tmp_path):
    junk = tmp_path / "junk.dat"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 100000, dtype=np.uint8).tobytes())
    compressed = tmp_path / "model.dat.bz2"
    compressed.write_bytes(b"BZh91AY&SY" + b"\x00" * 100)
    for path, words in ((junk, "not a valid dlib network"), (tmp_path / "missing.dat", "not found"),
                        (compressed, "bzip2")):
        with pytest.raises(AssetError, match=words) as info:
            DlibIdentityEncoder(path)
        assert str(path) in str(info.value)


def test_other_architecture_is_rejected(tmp_path, model_bytes):
    # A valid stream whose first conv has another stride is a different network, not this one.
    net = dlib_format.parse_dlib_net(model_bytes)
    from tf_facetex.identity.dlib_resnet import build_dlib_resnet, load_dlib_weights
    model = build_dlib_resnet()
    tampered = dataclasses.replace(net.layers[0], attrs={**net.layers[0].attrs, "stride": (1, 1)})
    broken = dlib_format.DlibNet(net.loss, net.input, [tampered] + net.layers[1:], net.wrapper_versions)
    with pytest.raises(AssetError, match="stride"):
        load_dlib_weights(model, broken, source="tampered.dat")
    short = dlib_format.DlibNet(net.loss, net.input, net.layers[:-2], net.wrapper_versions)
    with pytest.raises(AssetError, match="do not match"):
        load_dlib_weights(model, short, source="short.dat")


# ----------------------------------------------------------------------------------------------------
# Network vs dlib


def test_zero_extend_add_matches_dlib_add_prev():
    a = np.arange(1 * 3 * 3 * 2, dtype=np.float32).reshape(1, 3, 3, 2)
    b = np.ones((1, 4, 4, 1), np.float32)
    out = ZeroExtendAdd()([a, b]).numpy()
    assert out.shape == (1, 4, 4, 2)
    np.testing.assert_array_equal(out[:, :3, :3, :], a + np.pad(b[:, :3, :3], [[0, 0], [0, 0], [0, 0], [0, 1]]))
    np.testing.assert_array_equal(out[:, 3, :, 0], 1.0)           # only b reaches the extra row ...
    np.testing.assert_array_equal(out[:, 3, :, 1], 0.0)           # ... and b has no second channel


def _check_against_dlib(image, encoder, tools):
    shape, landmarks = _face(image, tools)
    reference = np.array(tools["recognizer"].compute_face_descriptor(image, shape))
    dlib_chip = dlib.get_face_chip(image, shape, 150, 0.25)
    our_chip = encoder.chip_numpy(image, landmarks)
    assert np.abs(dlib_chip.astype(int) - our_chip).mean() < 0.01       # bit-exact in practice
    ours = encoder.descriptors(our_chip[None]).numpy()[0]
    assert _cosine(ours, reference) > 0.999
    assert np.linalg.norm(ours - reference) < 1e-4                  # same scale too: dlib's 0.6 rule applies
    # The differentiable all-TF path (float pyramid, no integer rounding) stays close to dlib as well.
    matrices = encoder.chip_matrices(landmarks[None])
    np.testing.assert_allclose(matrices.numpy()[0], alignment.dlib_chip_matrix(landmarks), atol=2e-3)
    tf_chip = encoder.extract_chips(image[None], chip_matrices=matrices).numpy()[0] * 255.0
    assert np.abs(tf_chip - dlib_chip).mean() < 2.5
    assert _cosine(encoder.descriptors(tf_chip[None] / 255.0).numpy()[0], reference) > 0.999
    return ours, reference


def test_matches_dlib_on_astronaut(encoder, dlib_tools, astronaut):
    _check_against_dlib(astronaut, encoder, dlib_tools)


def test_matches_dlib_on_real_photos(encoder, dlib_tools, faces_dir):
    import cv2
    descriptors = []
    for name in REAL_PHOTOS:
        image = cv2.imread(str(faces_dir / name))[..., ::-1].copy()
        descriptors.append(_check_against_dlib(image, encoder, dlib_tools))
    # Different people stay apart in both (obama vs. the deepface photos).
    assert np.linalg.norm(descriptors[0][0] - descriptors[1][0]) > 0.6
    assert np.linalg.norm(descriptors[0][1] - descriptors[1][1]) > 0.6


def test_dlib_5_point_chips_match(astronaut, dlib_tools):
    boxes = dlib_tools["detector"](astronaut, 0)
    predictor5 = dlib.shape_predictor(face_recognition_models.pose_predictor_five_point_model_location())
    shape = predictor5(astronaut, boxes[0])
    landmarks = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    reference = dlib.get_face_chip(astronaut, shape, 150, 0.25)
    assert np.abs(reference.astype(int) - alignment.extract_dlib_chip(astronaut, landmarks)).mean() < 0.01


# ----------------------------------------------------------------------------------------------------
# TF behaviour: gradients, tf.function, conventions


def test_gradient_wrt_image_is_finite_and_nonzero(encoder, astronaut, dlib_tools):
    _, landmarks = _face(astronaut, dlib_tools)
    image = tf.Variable(astronaut[None].astype(np.float32) / 255.0)
    landmarks = tf.Variable(landmarks[None].astype(np.float32))
    target = tf.math.l2_normalize(tf.random.stateless_normal([1, 128], seed=[1, 2]), axis=-1)

    @tf.function
    def loss_fn():
        return 1.0 - identity_similarity(encoder.embed(image, landmarks=landmarks), target)[0]

    with tf.GradientTape() as tape:
        loss = loss_fn()
    grad_image, grad_landmarks = tape.gradient(loss, [image, landmarks])
    for grad in (grad_image, grad_landmarks):
        assert grad is not None and np.isfinite(grad.numpy()).all() and np.abs(grad.numpy()).max() > 0
    # Only pixels the chip samples (plus pyramid support) get gradient: the far corner does not.
    assert np.abs(grad_image.numpy()[0, -20:, -20:]).max() == 0
    graph_ops = {op.type for op in loss_fn.get_concrete_function().graph.get_operations()}
    assert not graph_ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}


def test_uint8_and_float_inputs_agree(encoder, astronaut, dlib_tools):
    _, landmarks = _face(astronaut, dlib_tools)
    as_uint8 = encoder.embed(astronaut[None], landmarks=landmarks[None])
    as_float = encoder.embed(astronaut[None].astype(np.float32) / 255.0, landmarks=landmarks[None])
    np.testing.assert_allclose(as_uint8.numpy(), as_float.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(as_uint8.numpy(), axis=-1), 1.0, atol=1e-5)
    assert as_uint8.shape == (1, encoder.embedding_dim)


def test_identity_similarity():
    a = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 0.0]], np.float32)
    b = np.array([[3.0, 0.0, 0.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(identity_similarity(a, b).numpy(), [1.0, -1.0, np.sqrt(0.5)], atol=1e-6)


def test_similarity_fit_and_tf_agree(rng):
    src = rng.uniform(0, 150, (12, 2))
    angle, scale, shift = 0.3, 2.5, np.array([40.0, -7.0])
    linear = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ linear.T + shift
    fitted = alignment.estimate_similarity(src, dst)
    np.testing.assert_allclose(fitted, np.concatenate([linear, shift[:, None]], 1), atol=1e-9)
    fitted_tf = alignment.fit_similarity_tf(src.astype(np.float32), dst[None].astype(np.float32)).numpy()[0]
    np.testing.assert_allclose(fitted_tf, fitted, atol=1e-3)


def test_warp_follows_matrix_and_antialias_level():
    # A horizontal ramp sampled with a pure translation reproduces the shifted ramp exactly.
    ramp = np.tile(np.arange(64, dtype=np.float32), (64, 1))[None, :, :, None]
    matrix = np.array([[[1.0, 0.0, 3.5], [0.0, 1.0, 2.0]]], np.float32)
    chip = alignment.warp_to_chips(ramp, matrix, 16).numpy()[0, :, :, 0]
    np.testing.assert_allclose(chip, np.tile(np.arange(16) + 3.5, (16, 1)), atol=1e-5)
    # A 4x reduction of a pixel-level checkerboard aliases without the pyramid, averages to grey with it.
    board = (np.indices((256, 256)).sum(0) % 2).astype(np.float32)[None, :, :, None]
    shrink = np.array([[[4.37, 0.0, 20.2], [0.0, 4.37, 20.7]]], np.float32)
    aliased = alignment.warp_to_chips(board, shrink, 40, antialias=False).numpy()
    smooth = alignment.warp_to_chips(board, shrink, 40, antialias=True).numpy()
    assert aliased.std() > 0.1 and smooth.std() < 0.01 and abs(smooth.mean() - 0.5) < 0.01


def test_numpy_and_tf_warps_agree(astronaut):
    landmarks = np.array([[190, 110], [235, 110], [215, 140], [195, 165], [235, 165]], np.float64)
    matrix = alignment.arcface_chip_matrix(landmarks)
    numpy_chip = alignment.warp_chip(astronaut, matrix, 112).astype(np.float32)
    tf_chip = alignment.warp_to_chips(astronaut[None].astype(np.float32), matrix[None], 112, antialias=False)
    assert np.abs(numpy_chip - tf_chip.numpy()[0]).mean() < 1.0      # cv2 rounds its bilinear weights


# ----------------------------------------------------------------------------------------------------
# ArcFace backend (structure only: deepface's weights are not available here)


@pytest.fixture(scope="module")
def arcface_random_weights(tmp_path_factory):
    model = build_arcface_model()
    rng = np.random.default_rng(1)
    values = []
    for weight in model.weights:
        value = rng.normal(0.0, 0.05, weight.shape).astype(np.float32)
        if weight.path.endswith(("moving_variance", "gamma")):
            value = 1.0 + np.abs(value)
        values.append(value)
    model.set_weights(values)
    path = tmp_path_factory.mktemp("arcface") / "arcface_weights.h5"
    save_arcface_weights_h5(model, path)
    return model, path


def test_arcface_builds_with_deepface_layout(arcface_random_weights):
    model, _ = arcface_random_weights
    assert model.input_shape == (None, 112, 112, 3) and model.output_shape == (None, 512)
    assert model.get_layer("conv5_block3_add") is not None and model.get_layer("embedding") is not None
    assert sum(1 for layer in model.layers if layer.weights) == 110


def test_arcface_weights_round_trip_through_h5(arcface_random_weights, astronaut):
    import h5py
    model, path = arcface_random_weights
    with h5py.File(path, "r") as handle:                 # Keras-2 legacy layout, as deepface's file
        first_name = handle["conv1_conv"].attrs["weight_names"][0]
        assert (first_name.decode() if isinstance(first_name, bytes) else first_name) == "conv1_conv/kernel:0"
    encoder = ArcFaceIdentityEncoder(path)
    chips = np.random.default_rng(2).uniform(0, 1, (2, 112, 112, 3)).astype(np.float32)
    np.testing.assert_allclose(encoder.model(chips).numpy(), model(chips).numpy(), rtol=1e-5, atol=1e-5)
    landmarks = np.array([[[190, 110], [235, 110], [215, 140], [195, 165], [235, 165]]], np.float32)
    embedding = encoder.embed(astronaut[None], landmarks=landmarks)
    assert embedding.shape == (1, 512) and np.isfinite(embedding.numpy()).all()
    # The chip puts the eyes where insightface's template says.
    matrix = alignment.arcface_chip_matrix(landmarks[0])
    np.testing.assert_allclose(matrix[:, :2] @ alignment.ARCFACE_TEMPLATE_112[0] + matrix[:, 2], landmarks[0, 0], atol=3)


def test_arcface_missing_or_corrupt_weights(tmp_path):
    missing = tmp_path / "arcface_weights.h5"
    with pytest.raises(AssetError, match="not found") as info:
        ArcFaceIdentityEncoder(missing)
    assert str(missing) in str(info.value)
    corrupt = tmp_path / "corrupt_arcface.h5"
    corrupt.write_bytes(os.urandom(4096))
    with pytest.raises(AssetError) as info:
        ArcFaceIdentityEncoder(corrupt)
    assert str(corrupt) in str(info.value) and "\n" not in str(info.value)
    # A valid Keras .h5 of another network.
    import keras
    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense")])
    wrong = tmp_path / "other_weights.h5"
    save_arcface_weights_h5(other, wrong)
    with pytest.raises(AssetError, match="do not fit") as info:
        ArcFaceIdentityEncoder(wrong)
    assert str(wrong) in str(info.value)


def test_encoder_is_cached(encoder):
    assert get_identity_encoder("dlib") is encoder
    with pytest.raises(AssetError, match="weights_path"):
        get_identity_encoder("arcface")
