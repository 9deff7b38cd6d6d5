"""Face identity: differentiable face-recognition networks for the cross-perceptual loss and the metric.

- ``dlib_format``: our reader of dlib's ``.dat`` DNN serialisation.
- ``dlib_resnet``: dlib's 128-d face-recognition ResNet as a Keras model, weights from the ``.dat``.
- ``alignment``: dlib / ArcFace chip alignment (numpy, bit-exact to dlib; TF, differentiable warp).
- ``encoder``: ``IdentityEncoder`` (dlib default, deepface ArcFace optional) and ``identity_similarity``.
"""
from tf_facetex.identity.alignment import (arcface_chip_matrices_tf, arcface_chip_matrix, dlib_chip_matrices_tf,
                                           dlib_chip_matrix, extract_dlib_chip, warp_to_chips)
from tf_facetex.identity.dlib_format import DlibNet, read_dlib_net
from tf_facetex.identity.dlib_resnet import DLIB_SAME_PERSON_DISTANCE, build_dlib_resnet, load_dlib_face_resnet
from tf_facetex.identity.encoder import (ArcFaceIdentityEncoder, DlibIdentityEncoder, IdentityEncoder,
                                         get_identity_encoder, identity_similarity, make_embed_fn)
