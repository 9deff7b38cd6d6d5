"""The resumable, sharded preprocessing run: photos -> aligned faces -> TFRecord shards + manifest.json
(scripts/preprocess.py; the record format is `tf_facetex.data.records`)."""
import dataclasses
import datetime
import hashlib
import json
import pathlib
import socket
import multiprocessing
import traceback
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from tf_facetex import io_utils
from tf_facetex.data import datasets
from tf_facetex.data.align import FacePreprocessor
from tf_facetex.data.records import (CROP_SIZE_DEFAULT, FORMAT_VERSION, MANIFEST_NAME, _tf, example_payload,
                                     example_sha1, read_manifest, read_records, serialize_payload,
                                     write_records_atomic)
from tf_facetex.errors import FaceTexError, ImageError


# ------------------------------------------------------------------------------- sharded preprocessing

@dataclasses.dataclass
class PreprocessConfig:
    """Settings of ``run_preprocess`` (the flags of scripts/preprocess.py)."""
    input_dirs: Sequence[str]
    output_dir: str
    dataset: str = "folder"            # "folder" (any images, recursive) | "celeba"
    num_shards: int = 16
    shard_indices: Optional[Sequence[int]] = None  # None: all shards
    test_fraction: float = 0.15
    split_seed: int = 0
    celeba_split: str = "paper"        # "paper" (85/15 random) | "official"
    image_format: str = "png"
    jpeg_quality: int = 95
    crop_size: int = CROP_SIZE_DEFAULT
    allow_rotation: bool = True
    all_faces: bool = False
    detector: str = "hog"
    masker: str = "parsing"
    parsing_weights: Optional[str] = None
    max_detect_side: int = 1024
    min_side: int = 32
    max_pixels: int = 50_000_000
    num_workers: int = 1
    overwrite: bool = False
    progress: bool = True
    verbose: bool = False

    def fingerprint(self) -> dict:
        """The settings that change what is written: shards made with other values are not mixed."""
        keys = ("dataset", "num_shards", "test_fraction", "split_seed", "celeba_split", "image_format", "jpeg_quality",
                "crop_size", "allow_rotation", "all_faces", "detector", "masker", "max_detect_side", "min_side")
        return {key: getattr(self, key) for key in keys} | {"format_version": FORMAT_VERSION}


@dataclasses.dataclass
class WorkItem:
    """A source photo scheduled for a shard."""
    path: str
    sha1: str
    split: str
    shard: int


def shard_of(sha1: str, num_shards: int) -> int:
    """The shard of a photo: its content hash modulo the shard count (duplicates land together)."""
    return int(hashlib.sha1(sha1.encode()).hexdigest()[:12], 16) % num_shards


def plan_work(config: PreprocessConfig, log=print):
    """Lists, hashes, deduplicates and splits the inputs, and assigns each photo to a shard.

    Returns:
      (items: list of WorkItem sorted by path, duplicates: list of dicts {path, duplicate_of}).
    """
    if config.dataset == "folder":
        paths = []
        for folder in config.input_dirs:
            paths += datasets.list_image_files(folder)
        files = datasets.hash_files(paths, progress=config.progress)
        unique, duplicates = datasets.dedupe_by_content(files)
        split_of = {}
        for split, members in datasets.split_by_hash(unique, config.test_fraction, config.split_seed).items():
            split_of.update({item.sha1: split for item in members})
        items = [WorkItem(str(f.path), f.sha1, split_of[f.sha1], shard_of(f.sha1, config.num_shards)) for f in unique]
    elif config.dataset == "celeba":
        if len(config.input_dirs) != 1:
            raise FaceTexError("--dataset=celeba takes exactly one --input_dir (the CelebA root)")
        celeba = datasets.read_celeba(config.input_dirs[0])
        split_of = {}
        for split, members in datasets.celeba_split(celeba, config.celeba_split, config.test_fraction,
                                                   config.split_seed).items():
            split_of.update({item.name: split for item in members})
        files = datasets.hash_files([item.path for item in celeba], progress=config.progress)
        unique, duplicates = datasets.dedupe_by_content(files)
        items = [WorkItem(str(f.path), f.sha1, split_of[f.path.name], shard_of(f.sha1, config.num_shards))
                 for f in unique]
    else:
        raise FaceTexError(f"unknown dataset layout {config.dataset!r} (expected 'folder' or 'celeba')")
    if not items:
        raise FaceTexError("no images found in " + ", ".join(map(str, config.input_dirs)))
    items.sort(key=lambda item: item.path)
    dups = [{"path": str(d.path), "duplicate_of": str(kept.path)} for d, kept in duplicates]
    return items, dups


def shard_name(index: int, num_shards: int) -> str:
    return f"{index:05d}-of-{num_shards:05d}"


# worker-process state: one FacePreprocessor per process (dlib models loaded once)
_WORKER = {}


def _init_worker(preprocessor_kwargs: dict, image_format: str, jpeg_quality: int) -> None:
    _WORKER["preprocessor"] = FacePreprocessor(**preprocessor_kwargs)
    _WORKER["format"] = (image_format, jpeg_quality)


def _process_item(item: WorkItem) -> dict:
    """Runs in a worker: one photo -> {"item", "payloads"} or {"item", "reason", "internal"}."""
    try:
        faces = _WORKER["preprocessor"].from_file(item.path)
        payloads = [example_payload(face, *_WORKER["format"]) for face in faces]
        return {"item": item, "payloads": payloads}
    except ImageError as err:  # includes NoFaceError: expected, one line
        return {"item": item, "reason": str(err), "internal": False}
    except Exception as err:  # noqa: BLE001 - a bug on one photo must not stop a large run
        return {"item": item, "reason": f"{item.path}: internal error {type(err).__name__}: {err}", "internal": True,
                "traceback": traceback.format_exc()}


class _ShardWriter:
    """Writes one shard, resumably: records go to ``*.partial`` files, and after each photo a line
    in ``shard-<i>.log.jsonl`` says it is done; finishing renames the partials to their final names
    and writes ``shard-<i>.json``, the marker that the shard is complete."""

    def __init__(self, output_dir: pathlib.Path, index: int, num_shards: int, log):
        self.output_dir = output_dir
        self.index = index
        self.name = shard_name(index, num_shards)
        self.log_path = output_dir / f"shard-{self.name}.log.jsonl"
        self.writers = {}
        self.counts: Dict[str, int] = {}
        self.done: Dict[str, dict] = {}
        self.log = log
        self._resume()
        self.log_handle = open(self.log_path, "a")

    def final_path(self, split: str) -> pathlib.Path:
        return self.output_dir / f"{split}-{self.name}.tfrecord"

    def partial_path(self, split: str) -> pathlib.Path:
        return self.output_dir / f"{split}-{self.name}.tfrecord.partial"

    def _resume(self) -> None:
        """Keeps the photos a killed run finished (logged, with all their records intact)."""
        entries = {}
        if self.log_path.exists():
            for line in self.log_path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    entries[entry["sha1"]] = entry
                except (json.JSONDecodeError, KeyError):
                    break  # a torn last line: the photo is redone
        kept_records: Dict[str, List[bytes]] = {}
        seen_counts: Dict[str, int] = {}
        for partial in sorted(self.output_dir.glob(f"*-{self.name}.tfrecord.partial")):
            split = partial.name[: -len(f"-{self.name}.tfrecord.partial")]
            records = read_records(partial, tolerate_truncation=True)
            kept_records[split] = [r for r in records if example_sha1(r) in entries]
            for record in kept_records[split]:
                sha1 = example_sha1(record)
                seen_counts[sha1] = seen_counts.get(sha1, 0) + 1
        complete = {sha1 for sha1, entry in entries.items() if entry.get("num_records", 0) == seen_counts.get(sha1, 0)}
        self.done = {sha1: entries[sha1] for sha1 in complete}
        if entries:
            self.log(f"[preprocess] shard {self.name}: resuming, {len(self.done)} photos already done")
        # rewrite the partials and the log with exactly the complete photos
        for split, records in kept_records.items():
            records = [r for r in records if example_sha1(r) in complete]
            write_records_atomic(self.partial_path(split), records)
            self.counts[split] = len(records)
        io_utils.write_text(self.log_path, "".join(json.dumps(self.done[s]) + "\n" for s in sorted(self.done)))

    def _writer(self, split: str):
        if split not in self.writers:
            tf = _tf()
            path = self.partial_path(split)
            previous = read_records(path) if path.exists() else []  # already trimmed by _resume
            writer = tf.io.TFRecordWriter(str(path))
            for record in previous:
                writer.write(record)
            self.writers[split] = writer
            self.counts.setdefault(split, len(previous))
        return self.writers[split]

    def add(self, item: WorkItem, records: List[bytes], reason: Optional[str] = None) -> None:
        """Appends a photo's records (possibly none, with the reason it was skipped), then logs it."""
        if records:
            writer = self._writer(item.split)
            for record in records:
                writer.write(record)
            writer.flush()  # records reach the file before the log says the photo is done
            self.counts[item.split] = self.counts.get(item.split, 0) + len(records)
        entry = {"sha1": item.sha1, "path": item.path, "split": item.split, "num_records": len(records)}
        if reason:
            entry["reason"] = reason
        self.done[item.sha1] = entry
        self.log_handle.write(json.dumps(entry) + "\n")
        self.log_handle.flush()

    def finish(self, fingerprint: dict) -> dict:
        """Renames partials to final names, writes ``shard-<name>.json``; returns its content."""
        tf = _tf()
        for writer in self.writers.values():
            writer.close()
        self.log_handle.close()
        outputs = {}
        for split in sorted(self.counts):
            partial = self.partial_path(split)
            if self.counts[split] > 0 and partial.exists():
                tf.io.gfile.rename(str(partial), str(self.final_path(split)), overwrite=True)
                outputs[split] = {"file": self.final_path(split).name, "num_records": self.counts[split]}
            elif partial.exists():
                partial.unlink()
        skipped = [{"path": e["path"], "sha1": e["sha1"], "reason": e["reason"]}
                   for e in sorted(self.done.values(), key=lambda e: e["path"]) if "reason" in e]
        info = {"shard": self.index, "name": self.name, "outputs": outputs, "num_photos": len(self.done),
                "num_faces": sum(o["num_records"] for o in outputs.values()), "skipped": skipped,
                "fingerprint": fingerprint, "host": socket.gethostname(),
                "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        io_utils.write_json(self.output_dir / f"shard-{self.name}.json", info)
        self.log_path.unlink()
        return info

    def abort(self) -> None:
        """Closes files, keeping partials and the log for the next run to resume from."""
        for writer in self.writers.values():
            writer.close()
        self.log_handle.close()


def _finished_shard(output_dir: pathlib.Path, index: int, num_shards: int, fingerprint: dict) -> Optional[dict]:
    """The shard's info if it is finished (marker present, its files in place), else None.

    Raises:
      FaceTexError: the shard was made with other settings (mixing them would corrupt the dataset).
    """
    path = output_dir / f"shard-{shard_name(index, num_shards)}.json"
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if info.get("fingerprint") != fingerprint:
        changed = sorted(k for k in fingerprint if (info.get("fingerprint") or {}).get(k) != fingerprint[k])
        raise FaceTexError(f"{path}: made with other settings ({', '.join(changed)} differ); "
                           "use another --output_dir or --overwrite")
    if all((output_dir / out["file"]).exists() for out in info.get("outputs", {}).values()):
        return info
    return None


def write_manifest(output_dir, config: Optional[PreprocessConfig] = None, optional_fields=None) -> dict:
    """Merges every finished ``shard-*.json`` into ``manifest.json`` (atomically) and returns it."""
    output_dir = pathlib.Path(output_dir)
    shards = []
    for path in sorted(output_dir.glob("shard-*-of-*.json")):
        try:
            shards.append(json.loads(path.read_text()))
        except json.JSONDecodeError:
            continue
    previous = read_manifest(output_dir) or {}
    num_records: Dict[str, int] = {}
    for shard in shards:
        for split, out in shard["outputs"].items():
            num_records[split] = num_records.get(split, 0) + out["num_records"]
    manifest = {
        "format_version": FORMAT_VERSION,
        "fingerprint": config.fingerprint() if config else previous.get("fingerprint"),
        "crop_size": config.crop_size if config else previous.get("crop_size", CROP_SIZE_DEFAULT),
        "num_shards": config.num_shards if config else previous.get("num_shards"),
        "finished_shards": [s["shard"] for s in shards],
        "num_records": num_records,
        "files": {split: sorted(s["outputs"][split]["file"] for s in shards if split in s["outputs"])
                  for split in num_records},
        "optional_fields": {k: v.to_json() for k, v in (optional_fields or {}).items()}
        if optional_fields is not None else previous.get("optional_fields", {}),
        "skipped": [entry for s in shards for entry in s["skipped"]],
    }
    io_utils.write_json(output_dir / MANIFEST_NAME, manifest)
    return manifest


def run_preprocess(config: PreprocessConfig, log=print) -> dict:
    """Photos -> aligned-face TFRecord shards (resumable, shardable across machines).

    Every machine plans the same work (same files, hashes, splits, shard of each photo), then
    processes ``config.shard_indices`` only. Finished shards (``shard-<i>-of-<n>.json`` present,
    written after the shard's files were renamed into place) are skipped; an unfinished shard
    resumes after the last photo it logged. All files are written via temp + rename.
    Returns:
      a summary dict (also what scripts/preprocess.py writes as JSON): counts, per-file skips with
      reasons, duplicates, the shards done / already finished.
    """
    _tf()  # import TensorFlow (and let it print its start-up lines) before the progress bar starts
    output_dir = pathlib.Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    indices = sorted(set(range(config.num_shards) if not config.shard_indices else config.shard_indices))
    bad = [i for i in indices if not 0 <= i < config.num_shards]
    if bad:
        raise FaceTexError(f"--shard_index {bad} out of range for --num_shards={config.num_shards}")
    existing = read_manifest(output_dir)
    if existing and existing.get("fingerprint") and existing["fingerprint"] != config.fingerprint() and not config.overwrite:
        changed = sorted(k for k in config.fingerprint() if existing["fingerprint"].get(k) != config.fingerprint()[k])
        raise FaceTexError(f"{output_dir} holds shards made with other settings ({', '.join(changed)} differ); "
                           "use another --output_dir or --overwrite")
    items, duplicates = plan_work(config, log)
    by_shard: Dict[int, List[WorkItem]] = {i: [] for i in indices}
    for item in items:
        if item.shard in by_shard:
            by_shard[item.shard].append(item)

    already, todo = [], []
    for index in indices:
        if not config.overwrite and _finished_shard(output_dir, index, config.num_shards,
                                                    config.fingerprint()) is not None:
            already.append(index)
        else:
            todo.append(index)
            if config.overwrite:
                for stale in output_dir.glob(f"*{shard_name(index, config.num_shards)}*"):
                    stale.unlink()
    if already:
        log(f"[preprocess] skipping {len(already)} finished shard(s): {_ranges(already)}")

    preprocessor_kwargs = dict(detector=config.detector, masker=config.masker, parsing_weights=config.parsing_weights,
                               crop_size=config.crop_size,
                               allow_rotation=config.allow_rotation, all_faces=config.all_faces,
                               min_side=config.min_side, max_pixels=config.max_pixels,
                               max_detect_side=config.max_detect_side)
    stats = {"photos": 0, "faces": 0, "skipped": [], "internal_errors": 0}
    finished = []
    total = sum(len(by_shard[i]) for i in todo)
    progress = _progress_bar(total, config.progress)
    pool = None
    try:
        if config.num_workers > 1 and total:
            # spawn, not fork: the parent has TensorFlow's thread pools running
            pool = multiprocessing.get_context("spawn").Pool(
                config.num_workers, initializer=_init_worker,
                initargs=(preprocessor_kwargs, config.image_format, config.jpeg_quality))
            mapper = lambda work: pool.imap(_process_item, work, chunksize=2)  # noqa: E731
        else:
            if total:
                _init_worker(preprocessor_kwargs, config.image_format, config.jpeg_quality)
            mapper = lambda work: map(_process_item, work)  # noqa: E731
        for index in todo:
            writer = _ShardWriter(output_dir, index, config.num_shards, log)
            work = [item for item in by_shard[index] if item.sha1 not in writer.done]
            progress.update(len(by_shard[index]) - len(work))
            try:
                for result in mapper(work):
                    item = result["item"]
                    if "payloads" in result:
                        records = [serialize_payload(p, item.path, item.sha1, item.split) for p in result["payloads"]]
                        writer.add(item, records)
                        stats["faces"] += len(records)
                    else:
                        writer.add(item, [], result["reason"])
                        stats["skipped"].append({"path": item.path, "reason": result["reason"]})
                        stats["internal_errors"] += int(result["internal"])
                        if result["internal"] and config.verbose:
                            log(result["traceback"])
                    stats["photos"] += 1
                    progress.update(1)
                    progress.set_postfix(faces=stats["faces"], skipped=len(stats["skipped"]), refresh=False)
            except BaseException:
                writer.abort()
                raise
            finished.append(writer.finish(config.fingerprint()))
    finally:
        progress.close()
        if pool is not None:
            pool.terminate()
    manifest = write_manifest(output_dir, config, optional_fields={})
    skipped_now = {entry["path"] for entry in stats["skipped"]}
    sha1_by_path = {item.path: item.sha1 for item in items}
    # photos skipped by an earlier, killed run of a shard finished now are reported too
    resumed_skips = [e for info in finished for e in info["skipped"] if e["path"] not in skipped_now]
    summary = {
        "output_dir": str(output_dir),
        "shards_processed": todo, "shards_already_finished": already,
        "photos_processed": stats["photos"], "faces_written": stats["faces"],
        "skipped": stats["skipped"] + [{"path": e["path"], "reason": e["reason"]} for e in resumed_skips],
        "internal_errors": stats["internal_errors"],
        "duplicates": [d for d in duplicates if sha1_by_path.get(d["duplicate_of"], "") and
                       shard_of(sha1_by_path[d["duplicate_of"]], config.num_shards) in by_shard],
        "num_records_total": manifest["num_records"],
    }
    return summary


def _ranges(indices: List[int]) -> str:
    return ", ".join(map(str, indices)) if len(indices) <= 8 else f"{indices[0]}..{indices[-1]} ({len(indices)})"


class _NoProgress:
    def update(self, *_):
        pass

    def set_postfix(self, **_):
        pass

    def close(self):
        pass


def _progress_bar(total: int, enabled: bool):
    if not enabled:
        return _NoProgress()
    return tqdm(total=total, desc="preprocess", unit="photo", dynamic_ncols=True)


def format_summary(summary: dict, max_lines: int = 20) -> str:
    """A human-readable end-of-run summary (counts, then skipped files grouped by reason)."""
    lines = [f"[preprocess] {summary['photos_processed']} photos processed, {summary['faces_written']} faces written; "
             f"{len(summary['skipped'])} skipped, {len(summary['duplicates'])} duplicates; "
             f"shards done {len(summary['shards_processed'])}, already finished {len(summary['shards_already_finished'])}; "
             f"records in {summary['output_dir']}: {summary['num_records_total']}"]
    for entry in summary["skipped"][:max_lines]:
        lines.append(f"  skipped {entry['reason']}")
    if len(summary["skipped"]) > max_lines:
        lines.append(f"  ... and {len(summary['skipped']) - max_lines} more (see the summary JSON)")
    return "\n".join(lines)


