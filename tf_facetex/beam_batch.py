"""Batch reconstruction on Apache Beam: the same face folders as ``scripts/reconstruct.py``, on any Beam runner.

The graph (`build_pipeline`): (image path, folder name) -> `DetectFaces` (read, detect, 68 landmarks, align, mask;
an unreadable file or a photo without a face goes to the ``errors`` output) -> ``BatchElements`` -> `Reconstruct`
(prior fit or regressor, UV fit or the trained network, in batches; writes each face folder with the product's
`pipeline.write_face_outputs` under a hidden name and renames it when complete) -> `finish` (``errors.json`` and
``index.html`` from all workers' results). Workers build their heavy state (dlib models, the face model, TensorFlow
graphs) once, in ``DoFn.setup``.

Every worker writes into ``out_dir`` with ordinary file operations, so on a cluster ``out_dir`` must be a file
system all workers and the driver see (NFS, a mounted bucket); the input paths likewise. Needs ``apache-beam``
(``scripts/install_tools.sh beam``); the rest of tf_facetex does not import this module.
"""
import dataclasses
import pathlib
import shutil
import tempfile
from typing import Optional

import apache_beam as beam

ERRORS = "errors"


@dataclasses.dataclass(frozen=True)
class ReconstructionSpec:
    """What ``scripts/reconstruct.py``'s flags say, as a picklable value shipped to the workers."""
    face_model: Optional[str] = None
    checkpoint: Optional[str] = None
    refiner: Optional[str] = None        # `pipeline.setup.REFINER_MODES`; None: 'net' with a checkpoint, else 'fit'
    net_fit_steps: int = 30
    prior: str = "fit"
    regressor_weights: Optional[str] = None
    regressor_backbone: str = "resnet50"
    uv_size: Optional[int] = None
    fit_steps: int = 150
    landmark_steps: int = 300
    turntable_light: str = "studio"
    detector: str = "auto"
    masker: str = "parsing"
    all_faces: bool = False
    mesh_pose: str = "unposed"
    batch_size: int = 1
    verbose: bool = False


def build_reconstructor(spec: ReconstructionSpec, log=print):
    """The `pipeline.Reconstructor` of ``spec`` (`pipeline.build_reconstructor`, as ``scripts/reconstruct.py``)."""
    from tf_facetex import pipeline

    return pipeline.build_reconstructor(spec.face_model, spec.checkpoint, spec.prior, spec.regressor_weights,
                                        spec.regressor_backbone, spec.uv_size, spec.fit_steps, spec.landmark_steps,
                                        spec.turntable_light, log=log, refiner=spec.refiner,
                                        net_fit_steps=spec.net_fit_steps)


def error_record(path, err, verbose=False) -> dict:
    from tf_facetex.pipeline import batch

    return {"input": str(path), "error": batch._error_text(err, verbose)}


class DetectFaces(beam.DoFn):
    """(path, folder name) -> (folder name, path, `AlignedFace`) per face; failures to the ``errors`` output."""

    def __init__(self, spec: ReconstructionSpec):
        self.spec = spec
        self.finder = None

    def setup(self):
        from tf_facetex import pipeline

        self.finder = pipeline.FaceFinder(detector=self.spec.detector, masker=self.spec.masker,
                                          all_faces=self.spec.all_faces)

    def process(self, element):
        from tf_facetex.data.images import load_image

        path, name = element
        try:
            faces = self.finder.from_image(load_image(path), name=str(path))
        except Exception as err:  # noqa: BLE001 - ImageError / NoFaceError expected; anything else recorded too
            yield beam.pvalue.TaggedOutput(ERRORS, error_record(path, err, self.spec.verbose))
            return
        for face in faces:
            yield (name + (f"_face{face.face_index}" if self.spec.all_faces else ""), str(path), face)


class Reconstruct(beam.DoFn):
    """A batch of detected faces -> face folders in ``out_dir`` (one output record each); failures to ``errors``.

    A batch that fails as a whole is retried face by face, so one bad face does not take its batch-mates along.
    """

    def __init__(self, spec: ReconstructionSpec, out_dir: str):
        self.spec, self.out_dir = spec, out_dir
        self.reconstructor = None

    def setup(self):
        self.reconstructor = build_reconstructor(self.spec)

    def process(self, batch):
        try:
            results = self.reconstructor.reconstruct([face for _, _, face in batch])
        except Exception as err:  # noqa: BLE001
            if len(batch) == 1:
                yield beam.pvalue.TaggedOutput(ERRORS, error_record(batch[0][1], err, self.spec.verbose))
                return
            for item in batch:
                yield from self.process([item])
            return
        for (name, path, face), result in zip(batch, results):
            try:
                yield self._write(name, path, face, result)
            except Exception as err:  # noqa: BLE001
                yield beam.pvalue.TaggedOutput(ERRORS, error_record(path, err, self.spec.verbose))

    def _write(self, name, path, face, result):
        from tf_facetex import pipeline
        from tf_facetex.data.images import load_image

        out_dir = pathlib.Path(self.out_dir)
        staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=out_dir))
        try:
            reconstructor = self.reconstructor
            pipeline.write_face_outputs(result, staging, reconstructor.model, reconstructor.layout, load_image(path),
                                        pathlib.Path(path), reconstructor.uv_mask,
                                        pipeline.OutputOptions(mesh_pose=self.spec.mesh_pose),
                                        info={"pipeline": reconstructor.describe()})
            pipeline.publish_folder(staging, out_dir / name)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return {"input": str(path), "folder": name, "face_index": int(face.face_index),
                "metrics": {k: float(v) for k, v in result.metrics.items()}}


def finish(_, out_dir, outputs, errors):
    """After every face: ``errors.json`` (sorted by input) and ``index.html``, as ``reconstruct.py`` writes them."""
    from tf_facetex import io_utils, pipeline

    errors = sorted(errors, key=lambda e: e["input"])
    io_utils.write_json(pathlib.Path(out_dir) / "errors.json", errors)
    pipeline.write_index_html(out_dir, errors)
    return {"outputs": sorted(outputs, key=lambda o: o["folder"]), "errors": errors}


def build_pipeline(p: beam.Pipeline, inputs, out_dir, spec: ReconstructionSpec):
    """Adds the reconstruction graph to ``p``. ``inputs``: image paths (`pipeline.resolve_inputs`). Returns the
    PCollection with the one summary dict {'outputs': [...], 'errors': [...]}."""
    from tf_facetex import pipeline

    names = pipeline.folder_names([pathlib.Path(path) for path in inputs])
    detected = (p | "Inputs" >> beam.Create([(str(path), name) for path, name in names.items()])
                | "Reshuffle" >> beam.Reshuffle()                  # spread the inputs over the workers
                | "DetectFaces" >> beam.ParDo(DetectFaces(spec)).with_outputs(ERRORS, main="faces"))
    written = (detected.faces
               | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=spec.batch_size)
               | "Reconstruct" >> beam.ParDo(Reconstruct(spec, str(out_dir))).with_outputs(ERRORS, main="folders"))
    errors = (detected[ERRORS], written[ERRORS]) | "AllErrors" >> beam.Flatten()
    return (p | "Finish" >> beam.Create([None])
            | "WriteIndex" >> beam.Map(finish, str(out_dir), beam.pvalue.AsList(written.folders),
                                       beam.pvalue.AsList(errors)))
