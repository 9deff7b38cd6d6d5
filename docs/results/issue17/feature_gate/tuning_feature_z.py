"""Prototype: z-scores of the gate's chroma deviation in the protected feature regions, real CelebA tuning photos."""
import sys, numpy as np, tensorflow as tf
from tf_facetex import pipeline
from tf_facetex.pipeline import setup
from tf_facetex.evaluation.clean_albedo import heldout_files, find_labelled_faces
import tf_facetex.prior.module as M
from tf_facetex.prior import appearance_gate as G
first, last = int(sys.argv[1]), int(sys.argv[2])
files, _ = heldout_files(count=200)
files = files[first:last]
finder = pipeline.FaceFinder()
faces, stems, labels, no_face = find_labelled_faces(files, finder, log=lambda *_: None)
rec = setup.build_reconstructor()
prior = rec.prior
records = []
orig = M.appearance_keep
def spy(images, coarse, region, landmarks, k, margin_px=4):
    dev = G.chroma_deviation(images, coarse)
    prot = G.feature_regions(landmarks, dev.shape[1], margin_px)
    reg = np.asarray(region) > 0.5
    for b in range(dev.shape[0]):
        v = dev[b][reg[b]]; med = np.median(v); spread = max(G.MAD_TO_SIGMA*float(np.median(np.abs(v-med))), G.MIN_SPREAD)
        z = (dev[b]-med)/spread
        records.append((z, prot[b], reg[b]))
    return orig(images, coarse, region, landmarks, k, margin_px)
M.appearance_keep = spy
for i in range(0, len(faces), 4):
    batch = faces[i:i+4]
    images, lms, masks = rec._inputs(batch)
    prior(tf.constant(images), tf.constant(lms), tf.constant(masks))
groups = {"brows": (6, 7), "eyes": (4, 5), "lips_mouth": (10, 11, 12), "skin_nose": (1, 2), "hair_hat": (13, 14), "glasses": (3,), "other": (0, 8, 9, 15, 16, 17, 18)}
out = {g: [] for g in groups}
for (z, prot, reg), stem in zip(records, stems):
    lab = labels[stem]
    sel = prot & reg
    for g, cls in groups.items():
        m = sel & np.isin(lab, cls)
        out[g].append(z[m])
for g, zs in out.items():
    z = np.concatenate(zs) if zs else np.zeros(0)
    if z.size == 0: print(g, "none"); continue
    print(f"{g:11s} n={z.size:7d} p50 {np.percentile(z,50):6.2f} p99 {np.percentile(z,99):6.2f} p99.5 {np.percentile(z,99.5):6.2f} p99.9 {np.percentile(z,99.9):6.2f}  frac>6 {np.mean(z>6):.4f} >12 {np.mean(z>12):.4f} >18 {np.mean(z>18):.4f} >24 {np.mean(z>24):.4f}")
print("faces", len(faces), "no face", no_face)
legit = np.concatenate(out["brows"] + out["lips_mouth"])
for k in range(14, 27):
    print(k, "brows+lips removed %.4f" % np.mean(legit > k), "hair/hat %.4f" % np.mean(np.concatenate(out["hair_hat"]) > k), "glasses %.4f" % np.mean(np.concatenate(out["glasses"]) > k))
