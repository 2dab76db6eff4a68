"""Evaluation at scale: all-pairs TAR@FAR on millions of scores, identification with 1M distractors.

    python bench/evaluation_scale.py --out docs/evaluation_scale.json  # full run, ~8 min on 2 cores
    python bench/evaluation_scale.py --quick --out /tmp/quick.json      # small sizes, seconds

Three parts, each reported with the load average around it (other jobs share the machine, so
wall times are medians and CPU times are given too):

a. Verification metrics on synthetic scores (default 15M impostor + 50k genuine, shuffled,
   10 interleaved folds): median wall/CPU time of ``--runs`` calls of ``tar_at_far`` (FAR 1e-1
   .. 1e-6), ``roc_curve`` and ``evaluate_scores`` (10-fold accuracy + ROC + TAR@FAR). With
   ``--baseline`` the committed ``verification.py`` (``git show HEAD:...``) is timed once on the
   same scores for comparison. Then ``all_pair_scores`` of 5,500 x 512 embeddings (~15M pairs).
b. MegaFace-style identification: 1M x 512 float32 L2-normalised random distractors written to
   a ``.npy`` file in a temporary folder (in chunks, deleted afterwards) and opened with
   ``np.load(mmap_mode="r")``; probes are 100 identities x 10 images (9,000 searches). Runs
   first, in a fresh process, so its peak resident memory (``ru_maxrss``, cross-checked with
   ``VmHWM``) is its own; ``baseline`` is the peak before the call (Python + TensorFlow import +
   probes), ``call_rss_mib`` what the call adds. 20 searches are re-ranked exactly (float64, no
   rank cap) as a spot check.
c. Real data, when present: the CelebA dev model ``--model`` embeds ``val`` (all-pairs TAR@FAR,
   ~540k pairs) and ``train`` (3,151 faces, distractors for MegaFace ranks on val).
"""

import argparse
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FARS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6)
MIB = 1024**2


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the JSON report to this file")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (1M impostors, 1,500 embeddings, 100k distractors, no "
                             "real data, no baseline): a smoke test in seconds")
    parser.add_argument("--impostors", type=int, default=15_000_000,
                        help="synthetic impostor scores for part a (default 15M)")
    parser.add_argument("--genuine", type=int, default=50_000,
                        help="synthetic genuine scores for part a (default 50k)")
    parser.add_argument("--runs", type=int, default=3,
                        help="timed calls per function in part a; the median is reported")
    parser.add_argument("--baseline", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the committed (git HEAD) verification.py once")
    parser.add_argument("--pair-embeddings", type=int, default=5500,
                        help="embeddings scored all-pairs in part a (default 5,500 -> 15.1M pairs)")
    parser.add_argument("--distractors", type=int, default=1_000_000,
                        help="random 512-d distractors for part b (default 1M = 2 GB on disk)")
    parser.add_argument("--identities", type=int, default=100,
                        help="probe identities for part b")
    parser.add_argument("--images-per-identity", type=int, default=10,
                        help="probe images per identity for part b")
    parser.add_argument("--tmp-dir", default=None,
                        help="folder for the temporary distractor file (default: system temp)")
    parser.add_argument("--model", default="/work/runs/celeba_arcface",
                        help="embedding model (run dir or .keras) for part c; skipped if absent")
    parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "celeba_dev"),
                        help="CelebA dev folder with train/ and val/ for part c")
    parser.add_argument("--skip-real", action="store_true", help="skip part c")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _identification_child(args.child, args)
    if args.quick:
        args.impostors, args.genuine, args.pair_embeddings = 1_000_000, 10_000, 1500
        args.distractors, args.identities, args.runs = 100_000, 20, 1
        args.baseline, args.skip_real = False, True

    report = {
        "command": " ".join(["python", os.path.relpath(__file__, REPO), *sys.argv[1:]])
        if argv is None else " ".join(["python", "bench/evaluation_scale.py", *argv]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "memory_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
    }
    # Part b first: its child process inherits the parent's peak RSS as its own starting
    # ru_maxrss (Linux keeps the high-water mark across exec), so the parent must still be small
    # (no TensorFlow, no 15M-score arrays) when it starts the child.
    identification = _identification_part(args)
    report["verification"] = _verification_part(args)
    _print_part("a. verification", report["verification"])
    report["all_pair_scores"] = _all_pairs_part(args)
    _print_part("a. all_pair_scores", report["all_pair_scores"])
    report["identification"] = identification
    _print_part("b. identification", report["identification"])
    if not args.skip_real:
        report["real_data"] = _real_data_part(args)
        _print_part("c. real data", report["real_data"])
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.out}")
    return 0


# ----------------------------------------------------------------------------- part a


def _synthetic_scores(num_impostors, num_genuine, seed=0):
    rng = np.random.default_rng(seed)
    scores = np.empty(num_impostors + num_genuine)
    scores[:num_impostors] = rng.normal(0.0, 0.1, num_impostors)
    scores[num_impostors:] = rng.normal(0.5, 0.15, num_genuine)
    issame = np.zeros(len(scores), bool)
    issame[num_impostors:] = True
    order = rng.permutation(len(scores))
    return scores[order], issame[order], np.arange(len(scores)) % 10


def _timed(function, runs):
    walls, cpus, result = [], [], None
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return {
        "median_seconds": round(statistics.median(walls), 3),
        "median_cpu_seconds": round(statistics.median(cpus), 3),
        "seconds": [round(value, 3) for value in walls],
    }, result


def _verification_part(args):
    from kerasface.evaluation import verification

    load_before = os.getloadavg()
    scores, issame, folds = _synthetic_scores(args.impostors, args.genuine)
    part = {
        "num_impostors": args.impostors,
        "num_genuine": args.genuine,
        "fars": list(FARS),
        "runs": args.runs,
    }
    part["tar_at_far"], points = _timed(
        lambda: verification.tar_at_far(scores, issame, FARS), args.runs)
    part["roc_curve"], roc = _timed(lambda: verification.roc_curve(scores, issame), args.runs)
    part["roc_points"] = len(roc[0])
    del roc
    part["evaluate_scores"], result = _timed(
        lambda: verification.evaluate_scores(scores, issame, folds, FARS, name="synthetic",
                                             max_roc_points=2000), args.runs)
    part["result"] = result.to_dict()
    part["tar_at_far_values"] = {f"{far:g}": points[far].tar for far in FARS}
    if args.baseline:
        baseline = _committed_verification()
        if baseline is None:
            part["baseline"] = "git HEAD verification.py not available"
        else:
            timing, old = _timed(
                lambda: baseline.evaluate_scores(scores, issame, folds, FARS), 1)
            same = (old.accuracy == result.accuracy and old.auc == result.auc
                    and all(np.array_equal([old.tar_at_far[f].tar], [result.tar_at_far[f].tar],
                                           equal_nan=True) for f in FARS))
            part["baseline_evaluate_scores"] = dict(timing, same_result=bool(same))
    part["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return part


def _committed_verification():
    try:
        source = subprocess.run(
            ["git", "-C", REPO, "show", "HEAD:kerasface/evaluation/verification.py"],
            capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
        f.write(source)
    try:
        spec = importlib.util.spec_from_file_location("committed_verification", f.name)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        os.remove(f.name)
    return module


def _all_pairs_part(args):
    from kerasface.evaluation.all_pair_scores import all_pair_scores

    load_before = os.getloadavg()
    rng = np.random.default_rng(1)
    num = args.pair_embeddings
    embeddings = rng.normal(size=(num, 512)).astype(np.float32)
    labels = rng.integers(0, max(1, num // 10), size=num)
    timing, (scores, issame) = _timed(lambda: all_pair_scores(embeddings, labels), args.runs)
    return dict(
        timing, num_embeddings=num, dim=512, num_pairs=len(scores),
        num_genuine=int(issame.sum()), load_average={"before": load_before,
                                                     "after": os.getloadavg()},
    )


# ----------------------------------------------------------------------------- part b


def _identification_part(args):
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(dir=args.tmp_dir, prefix="kerasface_distractors_") as tmp:
        path = os.path.join(tmp, "distractors.npy")
        write_seconds = _write_distractors(path, args.distractors, 512)
        command = [sys.executable, os.path.abspath(__file__), "--child", path,
                   "--identities", str(args.identities),
                   "--images-per-identity", str(args.images_per_identity)]
        finished = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
        if finished.returncode != 0:
            return {"error": finished.stderr[-2000:]}
        part = json.loads(finished.stdout.strip().splitlines()[-1])
        part["distractor_file_bytes"] = os.path.getsize(path)
    part["write_seconds"] = round(write_seconds, 2)
    part["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return part


def _write_distractors(path, num, dim, chunk=16384):
    """Random unit vectors to a .npy file, written chunk by chunk (never all in memory)."""
    start = time.perf_counter()
    rng = np.random.default_rng(2)
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
                "fortran_order": False, "shape": (num, dim)})
        for begin in range(0, num, chunk):
            block = rng.standard_normal((min(chunk, num - begin), dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            f.write(block.tobytes())
    return time.perf_counter() - start


def _identification_child(path, args):
    from kerasface.evaluation.identification import megaface_identification

    distractors = np.load(path, mmap_mode="r")
    rng = np.random.default_rng(3)
    dim = distractors.shape[1]
    labels = np.repeat(np.arange(args.identities), args.images_per_identity)
    centers = rng.normal(size=(args.identities, dim))
    # Noise per identity: true-match cosines ~ 1 / (1 + noise^2), from ~0.3 down to ~0.14,
    # around the best of 1M random distractors (~0.2), so ranks are spread out.
    noise = rng.uniform(1.5, 2.5, size=args.identities)[labels, None]
    probes = (centers[labels] + noise * rng.normal(size=(len(labels), dim))).astype(np.float32)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    wall, cpu = time.perf_counter(), time.process_time()
    result = megaface_identification(probes, labels, distractors, max_rank=10, name="synthetic")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    high_water = _vm_hwm()
    spot = _spot_check(probes, labels, distractors, result, rng)
    print(json.dumps({
        "num_distractors": int(len(distractors)),
        "dim": int(dim),
        "num_probe_images": int(len(probes)),
        "num_identities": int(args.identities),
        "num_searches": int(result.num_probes),
        "seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "baseline_rss_mib": round(baseline / MIB, 1),
        "peak_rss_mib": round(peak / MIB, 1),
        "call_rss_mib": round((peak - baseline) / MIB, 1),
        "vm_hwm_mib": None if high_water is None else round(high_water / MIB, 1),
        "distractor_file_mib": round(distractors.nbytes / MIB, 1),
        "rank1": result.rank1,
        "rank5": result.rank5,
        "cmc": [round(value, 4) for value in result.cmc],
        "spot_check": spot,
    }))
    return 0


def _vm_hwm():
    """This process's own peak RSS from /proc (None off Linux), to cross-check ru_maxrss."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _spot_check(probes, labels, distractors, result, rng, count=20, chunk=65536):
    """Exact (float64, uncapped) ranks of a few searches against the reported ones."""
    chosen = rng.choice(len(result.ranks), size=min(count, len(result.ranks)), replace=False)
    unit = probes.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    searcher, gallery = result.searches[chosen, 0], result.searches[chosen, 1]
    true_scores = np.sum(unit[searcher] * unit[gallery], axis=1)
    above = np.zeros(len(chosen), np.int64)
    for begin in range(0, len(distractors), chunk):
        block = np.asarray(distractors[begin:begin + chunk], np.float64)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        above += np.sum(unit[searcher] @ block.T >= true_scores[:, None], axis=1)
    exact = np.minimum(above + 1, result.max_rank + 1)
    return {"searches": int(len(chosen)), "agree": int(np.sum(exact == result.ranks[chosen])),
            "exact_ranks": (above + 1).tolist()}


# ----------------------------------------------------------------------------- part c


def _real_data_part(args):
    model_path, data = args.model, os.path.abspath(args.data)
    missing = [p for p in (model_path, os.path.join(data, "val"), os.path.join(data, "train"))
               if not os.path.exists(p)]
    if missing:
        return {"skipped": f"not found: {', '.join(missing)}"}
    from kerasface.data.folder_source import FolderSource
    from kerasface.evaluation.all_pair_scores import all_pair_scores
    from kerasface.evaluation.embed_images import embed_images
    from kerasface.evaluation.identification import (
        closed_set_identification,
        megaface_identification,
        split_gallery_probe,
    )
    from kerasface.evaluation.verification import evaluate_scores
    from kerasface.models import load_embedding_model

    load_before = os.getloadavg()
    model = load_embedding_model(model_path)
    part = {"model": model_path, "data": data}
    embedded = {}
    for split in ("val", "train"):
        source = FolderSource(os.path.join(data, split))
        wall = time.perf_counter()
        embedded[split] = (embed_images(model, source.file_paths, batch_size=64),
                           np.asarray(source.labels))
        part[f"embed_{split}_seconds"] = round(time.perf_counter() - wall, 1)
        part[f"{split}_images"] = len(source.file_paths)
    val, val_labels = embedded["val"]
    train, _ = embedded["train"]

    timing, (scores, issame) = _timed(lambda: all_pair_scores(val, val_labels), 1)
    part["all_pairs_seconds"] = timing["median_seconds"]
    wall = time.perf_counter()
    # All-pairs has no fold structure: 10 folds by pair position, for the accuracy figure.
    result = evaluate_scores(scores, issame, np.arange(len(scores)) % 10, FARS,
                             name="celeba_dev val all pairs", max_roc_points=2000)
    part["evaluate_scores_seconds"] = round(time.perf_counter() - wall, 2)
    part["all_pairs"] = result.to_dict()

    wall = time.perf_counter()
    megaface = megaface_identification(val, val_labels, train, max_rank=10,
                                       name="celeba_dev val + train distractors")
    part["megaface_seconds"] = round(time.perf_counter() - wall, 2)
    part["megaface"] = megaface.to_dict()
    part["megaface_no_distractors"] = megaface_identification(
        val, val_labels, None, max_rank=10).to_dict()
    gallery, probes = split_gallery_probe(val_labels)
    part["closed_set"] = closed_set_identification(
        val[gallery], val_labels[gallery], val[probes], val_labels[probes], train, max_rank=10,
        name="celeba_dev val, first image enrolled, + train distractors",
    ).to_dict()
    part["load_average"] = {"before": load_before, "after": os.getloadavg()}
    return part


def _print_part(title, part):
    print(f"== {title}")
    print(json.dumps(part, indent=1)[:3000], flush=True)


if __name__ == "__main__":
    sys.exit(main())
