"""Evaluation reports comparing models: one self-contained HTML file, or Markdown + PNG files.

The HTML report needs nothing but itself: CSS is inline, figures and face thumbnails are
base64 ``data:`` URIs and there is no script, so it can be mailed or archived as one file.
Every text that comes from a model, a set or a file name is HTML-escaped.
"""

import base64
import dataclasses
import datetime
import html
import io
import math
import os
import tempfile

import numpy as np

DEFAULT_TITLE = "kerasface evaluation report"
THUMBNAIL_SIZE = 112

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { border-bottom: 2px solid #444; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #bbb; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: 14px; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
td.best { font-weight: bold; background: #eaf6ea; }
.reason, .small { display: block; font-size: 11px; color: #777; }
.meta td { text-align: left; }
code, pre { background: #f6f6f6; padding: 2px 4px; font-size: 13px; }
pre { padding: 8px; overflow-x: auto; }
img.figure { max-width: 100%; border: 1px solid #ddd; margin: .5em 0; }
.pairs { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 1em; }
.pair { border: 2px solid #ccc; padding: 4px; width: 232px; font-size: 12px; }
.pair.wrong { border-color: #d33; }
.pair.right { border-color: #3a3; }
.pair img { width: 112px; height: 112px; image-rendering: auto; }
.pair .names { color: #666; font-size: 11px; word-break: break-all; }
.missing { display: inline-block; width: 112px; height: 112px; background: #eee;
           font-size: 10px; overflow: hidden; vertical-align: top; }
.verdict-wrong { color: #c00; font-weight: bold; }
.verdict-right { color: #080; }
nav a { margin-right: 1em; }
"""


@dataclasses.dataclass
class _PairShown:
    """One pair picked as a worst case: what the report shows about it."""

    rank: int
    pair: int
    score: float
    threshold: float
    genuine: bool
    names: tuple
    images: tuple  # per face: (mime, bytes) or None when the file cannot be read
    copies: int = 1  # how many pairs of the set join these two images (either order)

    @property
    def accepted(self):
        return self.score > self.threshold

    @property
    def wrong(self):
        """True when the pair falls on the wrong side of the threshold."""
        return self.accepted != self.genuine

    @property
    def verdict(self):
        if self.genuine:
            return "accepted (correct)" if self.accepted else "false reject"
        return "false accept" if self.accepted else "rejected (correct)"


def write_report(path, evaluations, identification=None, set_results=None, title=DEFAULT_TITLE,
                 models_info=None, top_k=8, command_line=None):
    """Write a self-contained HTML report comparing models on verification sets.

    Sections: header (date, kerasface version, command line, models, sets), a summary table
    (accuracy +- std, threshold, AUC per model and set), then per set the ROC curves of all
    models (log FAR), a TAR@FAR table (n/a with its reason), genuine/impostor score
    histograms and each model's worst false accepts and false rejects as face pairs (a pair
    the set lists several times is shown once, with its count); then identification (CMC
    and rank-1/rank-5) and set (video) verification when given.

    Args:
        path: the ``.html`` file to write (parent folders are created).
        evaluations: dict model name -> list of
            :class:`~kerasface.evaluation.set_evaluation.SetEvaluation`, the same sets in the
            same order for every model.
        identification: optional dict model name -> ``IdentificationResult`` (or a list of them),
            or a list of results (labelled by their ``name``).
        set_results: optional dict model name -> ``SetVerificationResult`` (or a list of them).
        title: page title.
        models_info: optional dict model name -> dict of what to show about it (e.g.
            ``description``, ``fingerprint``, ``path``), or a description string.
        top_k: worst false accepts and false rejects shown per model and set (0: none).
        command_line: the command that produced the report, shown in the header.

    Returns:
        ``path``.
    """
    report = _collect(evaluations, identification, set_results, models_info, top_k)
    with tempfile.TemporaryDirectory(prefix="kerasface-report-") as scratch:
        figures = _draw_figures(report, scratch)
        figures = {key: _data_uri("image/png", _read(file)) for key, file in figures.items()}
    page = _render_html(report, figures, title, command_line)
    path = os.fspath(path)
    _make_parent(path)
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(partial, path)
    return path


def write_markdown_report(folder, evaluations, identification=None, set_results=None,
                          title=DEFAULT_TITLE, models_info=None, top_k=8, command_line=None):
    """Write the report as ``folder/report.md`` plus PNG figures and face-pair montages.

    Same content and arguments as :func:`write_report` (``folder`` replaces ``path``); the
    worst pairs of each model are drawn into one PNG montage per set and kind, with a table
    of their scores and image names.

    Returns:
        the path of ``report.md``.
    """
    report = _collect(evaluations, identification, set_results, models_info, top_k)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    figures = _draw_figures(report, folder)
    montages = {}
    for set_index, per_model in report.pairs_shown.items():
        for (model_index, kind), shown in per_model.items():
            if shown:
                file = os.path.join(folder, f"set{set_index}_model{model_index}_{kind}.png")
                _save_montage(shown, file)
                montages[set_index, model_index, kind] = os.path.basename(file)
    text = _render_markdown(report, {k: os.path.basename(v) for k, v in figures.items()},
                            montages, title, command_line)
    path = os.path.join(folder, "report.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


# ----------------------------------------------------------------------------- gathering


@dataclasses.dataclass
class _Report:
    models: list            # model names, in order
    sets: list              # the VerificationSet of each position (from the first model)
    evaluations: dict       # model name -> list of SetEvaluation
    identification: list    # [(label, IdentificationResult)]
    set_results: list       # [(label, SetVerificationResult)]
    models_info: dict       # model name -> dict of strings
    pairs_shown: dict       # set index -> {(model index, "false_accepts"|"false_rejects"): [...]}
    unreadable: list        # image names whose thumbnail could not be made


def _collect(evaluations, identification, set_results, models_info, top_k):
    if not isinstance(evaluations, dict) or not evaluations:
        got = "an empty dict" if isinstance(evaluations, dict) else type(evaluations).__name__
        raise ValueError(
            f"`evaluations` must be a non-empty dict model name -> list of SetEvaluation, got {got}"
        )
    if not isinstance(top_k, (int, np.integer)) or isinstance(top_k, bool) or top_k < 0:
        raise ValueError(f"`top_k` must be an int >= 0, got {top_k!r}")
    normalised = {}
    for name, items in evaluations.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"model names must be non-empty strings, got {name!r}")
        items = [items] if hasattr(items, "scores") else list(items)
        if not items:
            raise ValueError(f"model {name!r} has no set evaluations")
        normalised[name] = items
    models = list(normalised)
    reference = normalised[models[0]]
    for name in models[1:]:
        items = normalised[name]
        if len(items) != len(reference):
            raise ValueError(
                f"every model must be evaluated on the same sets: {models[0]!r} has "
                f"{len(reference)}, {name!r} has {len(items)}"
            )
        for position, (mine, theirs) in enumerate(zip(items, reference)):
            if (mine.set.name != theirs.set.name or len(mine.set.pairs) != len(theirs.set.pairs)
                    or not np.array_equal(mine.set.issame, theirs.set.issame)):
                raise ValueError(
                    f"set #{position} differs between models: {models[0]!r} has "
                    f"{theirs.set.name!r} ({len(theirs.set.pairs)} pairs), {name!r} has "
                    f"{mine.set.name!r} ({len(mine.set.pairs)} pairs)"
                )
    sets = [item.set for item in reference]

    info = {}
    for name in models:
        given = (models_info or {}).get(name)
        if given is None:
            given = {}
        elif not isinstance(given, dict):
            given = {"description": given}
        info[name] = {str(key): "" if value is None else str(value) for key, value in given.items()}

    unreadable = []
    thumbnails = {}
    pairs_shown = {}
    for set_index, vset in enumerate(sets):
        pairs_shown[set_index] = {}
        copies = _pair_copies(vset) if top_k else None
        for model_index, name in enumerate(models):
            evaluation = normalised[name][set_index]
            for kind in ("false_accepts", "false_rejects"):
                indices = _distinct_worst(evaluation, kind, int(top_k), copies) if top_k else []
                pairs_shown[set_index][model_index, kind] = [
                    _pair_shown(rank, index, evaluation, vset, thumbnails, unreadable, copies)
                    for rank, index in enumerate(indices, start=1)
                ]
    return _Report(
        models=models,
        sets=sets,
        evaluations=normalised,
        identification=_labelled(identification, "identification"),
        set_results=_labelled(set_results, "set_results"),
        models_info=info,
        pairs_shown=pairs_shown,
        unreadable=unreadable,
    )


def _labelled(results, argument):
    """dict name -> result or list of results, or a list/one result -> [(label, result)].

    Labels are made unique (figure legends are keyed by them).
    """
    labelled = _labels(results, argument)
    seen = {}
    unique = []
    for label, value in labelled:
        seen[label] = seen.get(label, 0) + 1
        unique.append((label if seen[label] == 1 else f"{label} #{seen[label]}", value))
    return unique


def _labels(results, argument):
    if results is None:
        return []
    if isinstance(results, dict):
        labelled = []
        for model, value in results.items():
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            for value in values:
                own = getattr(value, "name", None)
                label = str(model) if len(values) == 1 or not own else f"{model}: {own}"
                labelled.append((label, value))
        return labelled
    values = list(results) if isinstance(results, (list, tuple)) else [results]
    labelled = []
    for position, value in enumerate(values):
        label = getattr(value, "name", None) or f"{argument} #{position}"
        labelled.append((str(label), value))
    return labelled


def _pair_copies(vset):
    """(key of each pair's unordered image pair, number of pairs sharing each pair's key)."""
    pairs = np.sort(np.asarray(vset.pairs, np.int64), axis=1)
    keys = pairs[:, 0] * max(len(vset.images), 1) + pairs[:, 1]
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return keys, counts[inverse]


def _distinct_worst(evaluation, kind, k, copies):
    """Indices of the ``k`` worst pairs of ``kind``, a pair listed twice in the set shown once.

    Pairs lists may repeat a pair (or list it both ways round); showing its copies side by
    side would crowd out the next-worst cases, so each is shown once with its count.
    """
    keys = copies[0]
    wanted = k
    while True:
        candidates = getattr(evaluation, kind)(wanted)
        chosen, seen = [], set()
        for index in candidates:
            if keys[index] not in seen:
                seen.add(keys[index])
                chosen.append(index)
                if len(chosen) == k:
                    return chosen
        if len(candidates) < wanted:  # every pair of this kind was looked at
            return chosen
        wanted *= 4


def _pair_shown(rank, index, evaluation, vset, thumbnails, unreadable, copies):
    first, second = (int(i) for i in vset.pairs[index])
    names, images = [], []
    for image_index in (first, second):
        key = (id(vset), image_index)
        if key not in thumbnails:
            thumbnails[key] = _thumbnail(vset, image_index, unreadable)
        names.append(_short_name(vset, image_index))
        images.append(thumbnails[key])
    return _PairShown(
        rank=rank,
        pair=int(index),
        score=float(evaluation.scores[index]),
        threshold=float(evaluation.result.threshold),
        genuine=bool(vset.issame[index]),
        names=tuple(names),
        images=tuple(images),
        copies=int(copies[1][index]),
    )


def _short_name(vset, index):
    name = str(vset.image_name(index))
    root = getattr(vset, "root", None)
    if root and os.path.isabs(name):
        relative = os.path.relpath(name, root)
        if not relative.startswith(".."):
            return relative
    return name


def _thumbnail(vset, index, unreadable):
    """(mime, bytes) of a small image of face ``index``; None (name recorded) if unreadable."""
    from PIL import Image

    try:
        content = vset.image_bytes(index)
        with Image.open(io.BytesIO(content)) as image:
            image.load()
            if image.format in ("JPEG", "PNG") and max(image.size) <= THUMBNAIL_SIZE + 16:
                return f"image/{image.format.lower()}", bytes(content)
            image = image.convert("RGB")
            image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
            return "image/png", buffer.getvalue()
    except Exception as error:  # one bad file must not sink the whole report; it is listed
        unreadable.append(f"{vset.image_name(index)}: {type(error).__name__}: {error}")
        return None


def _draw_figures(report, folder):
    """Write every figure as a PNG in ``folder``; returns dict key -> file path."""
    from kerasface.evaluation.roc_plot import plot_roc
    from kerasface.evaluation.score_histogram import plot_score_histograms

    figures = {}
    for set_index, vset in enumerate(report.sets):
        per_model = {name: report.evaluations[name][set_index] for name in report.models}
        figures["roc", set_index] = plot_roc(
            {name: item.result for name, item in per_model.items()},
            os.path.join(folder, f"set{set_index}_roc.png"),
            title=f"ROC on {vset.name}",
        )
        figures["scores", set_index] = plot_score_histograms(
            per_model, os.path.join(folder, f"set{set_index}_scores.png"),
            title=f"{vset.name}: genuine vs impostor scores",
        )
    if report.identification:
        from kerasface.evaluation.cmc_plot import plot_cmc

        figures["cmc"] = plot_cmc(dict(report.identification), os.path.join(folder, "cmc.png"))
    return figures


# ----------------------------------------------------------------------------- HTML


def _render_html(report, figures, title, command_line):
    from kerasface import __version__

    e = _escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head><body>",
        f"<h1>{e(title)}</h1>",
        '<table class="meta">',
        f"<tr><th>generated</th><td>{e(_now())}</td></tr>",
        f"<tr><th>kerasface</th><td>{e(__version__)}</td></tr>",
    ]
    if command_line:
        parts.append(f"<tr><th>command</th><td><code>{e(command_line)}</code></td></tr>")
    parts.append("</table>")

    links = [f'<a href="#set-{i}">{e(vset.name)}</a>' for i, vset in enumerate(report.sets)]
    if report.identification:
        links.append('<a href="#identification">identification</a>')
    if report.set_results:
        links.append('<a href="#set-verification">set verification</a>')
    parts.append(f"<nav>{''.join(links)}</nav>")

    parts.append("<h2>Models</h2>")
    parts.append(_html_models(report))
    parts.append("<h2>Sets</h2>")
    parts.append(_html_sets(report))
    parts.append("<h2>Summary</h2>")
    parts.append(_html_summary(report))

    for set_index, vset in enumerate(report.sets):
        parts.append(f'<h2 id="set-{set_index}">{e(vset.name)}</h2>')
        parts.append(_img(figures["roc", set_index], f"ROC curves on {vset.name}"))
        parts.append("<h3>TAR at FAR</h3>")
        parts.append(_html_tar_table(report, set_index))
        parts.append("<h3>Genuine vs impostor scores</h3>")
        parts.append(_img(figures["scores", set_index], f"score histograms on {vset.name}"))
        for model_index, name in enumerate(report.models):
            for kind, heading in (("false_accepts", "Worst false accepts"),
                                  ("false_rejects", "Worst false rejects")):
                shown = report.pairs_shown[set_index][model_index, kind]
                if not shown:
                    continue
                parts.append(
                    f"<h3>{heading}: {e(name)}</h3>"
                    f'<p class="small">{e(_explain(report, set_index, name, kind))}</p>'
                )
                parts.append(_html_pairs(shown, kind, name))

    if report.identification:
        parts.append('<h2 id="identification">Identification</h2>')
        parts.append(_img(figures["cmc"], "CMC curves"))
        parts.append(_html_identification(report))
    if report.set_results:
        parts.append('<h2 id="set-verification">Set (video) verification</h2>')
        for label, result in report.set_results:
            parts.append(f"<h3>{e(label)}</h3>")
            parts.append(_html_set_result(result))
    if report.unreadable:
        parts.append("<h2>Images that could not be shown</h2><ul>")
        parts.extend(f"<li>{e(item)}</li>" for item in report.unreadable)
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _html_models(report):
    e = _escape
    rows = ['<table class="meta"><tr><th class="text">model</th><th class="text">details</th>'
            '<th>embedding</th></tr>']
    for name in report.models:
        details = "".join(
            f"<span><b>{e(key)}</b>: {e(value)}</span><br>"
            for key, value in report.models_info[name].items()
        ) or "&nbsp;"
        embeddings = getattr(report.evaluations[name][0], "embeddings", None)
        dim = f"{embeddings.shape[1]}-d" if getattr(embeddings, "ndim", 0) == 2 else "?"
        rows.append(f'<tr><td class="text">{e(name)}</td><td class="text">{details}</td>'
                    f"<td>{e(dim)}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _html_sets(report):
    e = _escape
    rows = ["<table><tr><th class='text'>set</th><th class='text'>source</th><th>pairs</th>"
            "<th>genuine</th><th>impostor</th><th>images</th><th>folds</th></tr>"]
    for vset in report.sets:
        genuine = int(np.count_nonzero(vset.issame))
        folds = getattr(vset, "folds", None)
        num_folds = len(np.unique(folds)) if folds is not None else "?"
        rows.append(
            f"<tr><td class='text'>{e(vset.name)}</td><td class='text'>"
            f"{e(getattr(vset, 'source', ''))}</td><td>{len(vset.pairs)}</td><td>{genuine}</td>"
            f"<td>{len(vset.pairs) - genuine}</td><td>{len(vset.images)}</td>"
            f"<td>{e(num_folds)}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _html_summary(report):
    e = _escape
    head = "".join(f"<th colspan='3'>{e(vset.name)}</th>" for vset in report.sets)
    sub = "<th>accuracy</th><th>threshold</th><th>AUC</th>" * len(report.sets)
    rows = [f"<table class='summary'><tr><th class='text' rowspan='2'>model</th>{head}</tr>",
            f"<tr>{sub}</tr>"]
    best = [max(report.evaluations[name][i].result.accuracy for name in report.models)
            for i in range(len(report.sets))]
    for name in report.models:
        cells = [f"<td class='text'>{e(name)}</td>"]
        for set_index in range(len(report.sets)):
            result = report.evaluations[name][set_index].result
            is_best = len(report.models) > 1 and result.accuracy == best[set_index]
            marked = " best" if is_best else ""
            cells.append(
                f"<td class='accuracy{marked}' data-model='{e(name)}' data-set='{set_index}' "
                f"data-value='{result.accuracy!r}'>{100 * result.accuracy:.2f}% &plusmn; "
                f"{100 * result.accuracy_std:.2f}</td>"
                f"<td>{result.threshold:.4f}</td><td>{result.auc:.4f}</td>"
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _fars(report, set_index):
    fars = []
    for name in report.models:
        for far in report.evaluations[name][set_index].result.tar_at_far:
            if far not in fars:
                fars.append(far)
    return fars


def _html_tar_table(report, set_index):
    e = _escape
    fars = _fars(report, set_index)
    head = "".join(f"<th>FAR {far:.0e}</th>" for far in fars)
    rows = [f"<table class='tar'><tr><th class='text'>model</th>{head}</tr>"]
    for name in report.models:
        points = report.evaluations[name][set_index].result.tar_at_far
        cells = [f"<td class='text'>{e(name)}</td>"]
        for far in fars:
            point = points.get(far)
            attributes = f"data-model='{e(name)}' data-far='{far!r}'"
            if point is None:
                cells.append(f"<td {attributes} data-tar='nan'>&ndash;"
                             "<span class='reason'>not computed</span></td>")
            elif point.reason or not math.isfinite(point.tar):
                reason = point.reason or "undefined"
                cells.append(f"<td {attributes} data-tar='nan'>n/a"
                             f"<span class='reason'>{e(reason)}</span></td>")
            else:
                cells.append(
                    f"<td {attributes} data-tar='{float(point.tar)!r}' "
                    f"title='threshold {point.threshold:.6f}, achieved FAR "
                    f"{point.achieved_far:.2e}'>{100 * point.tar:.2f}%"
                    f"<span class='small'>thr {point.threshold:.4f}</span></td>"
                )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _explain(report, set_index, name, kind):
    """What a worst-pairs block shows, and how many pairs of that kind are errors."""
    evaluation = report.evaluations[name][set_index]
    threshold = float(evaluation.result.threshold)
    issame = np.asarray(evaluation.set.issame, bool)
    scores = np.asarray(evaluation.scores)
    if kind == "false_accepts":
        errors, total = int(np.count_nonzero(scores[~issame] > threshold)), int((~issame).sum())
        what = "impostor pairs with the highest scores, worst first"
        error = "false accepts (score above the threshold)"
    else:
        errors, total = int(np.count_nonzero(scores[issame] <= threshold)), int(issame.sum())
        what = "genuine pairs with the lowest scores, worst first"
        error = "false rejects (score at or below the threshold)"
    return (f"{what}; threshold {threshold:.4f} (mean of the k-fold thresholds): {errors} of "
            f"{total} are {error}")


def _html_pairs(shown, kind, model):
    e = _escape
    items = [f"<div class='pairs' data-kind='{kind}' data-model='{e(model)}'>"]
    for pair in shown:
        faces = "".join(
            _face_img(image, name) for image, name in zip(pair.images, pair.names)
        )
        side = "&gt;" if pair.accepted else "&le;"
        verdict_class = "verdict-wrong" if pair.wrong else "verdict-right"
        items.append(
            f"<div class='pair {'wrong' if pair.wrong else 'right'}' data-pair='{pair.pair}' "
            f"data-score='{pair.score!r}'>"
            f"<div>{faces}</div>"
            f"<div>#{pair.rank} score {pair.score:.4f} {side} {pair.threshold:.4f}: "
            f"<span class='{verdict_class}'>{e(pair.verdict)}</span>{_copies_note(pair)}</div>"
            f"<div class='names'>{e(pair.names[0])}<br>{e(pair.names[1])}</div>"
            "</div>"
        )
    items.append("</div>")
    return "\n".join(items)


def _copies_note(pair):
    if pair.copies == 1:
        return ""
    return f"<span class='small'>this pair is listed {pair.copies} times in the set</span>"


def _face_img(image, name):
    if image is None:
        return f"<span class='missing'>unreadable: {_escape(name)}</span>"
    mime, content = image
    return f"<img src='{_data_uri(mime, content)}' alt='{_escape(name)}' title='{_escape(name)}'>"


def _html_identification(report):
    e = _escape
    rows = ["<table class='identification'><tr><th class='text'>model</th>"
            "<th class='text'>evaluated</th><th class='text'>protocol</th><th>searches</th>"
            "<th>distractors</th><th>rank-1</th><th>rank-5</th></tr>"]
    for label, result in report.identification:
        rank1, rank5 = _rank(result, 1), _rank(result, 5)
        skipped = getattr(result, "num_skipped_images", 0) or 0
        note = (f"<span class='reason'>{e(skipped)} probe images gave no search</span>"
                if skipped else "")
        rows.append(
            f"<tr><td class='text'>{e(label)}</td>"
            f"<td class='text'>{e(getattr(result, 'name', '') or '')}{note}</td>"
            f"<td class='text'>{e(getattr(result, 'protocol', ''))}</td>"
            f"<td>{e(getattr(result, 'num_probes', '?'))}</td>"
            f"<td>{e(getattr(result, 'num_distractors', '?'))}</td>"
            f"<td data-rank='1' data-value='{rank1!r}'>{_percent(rank1)}</td>"
            f"<td data-rank='5' data-value='{rank5!r}'>{_percent(rank5)}</td></tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _rank(result, k):
    """Rate within rank ``k``: the result's own attribute, else read from its CMC."""
    value = getattr(result, f"rank{k}", None)
    if value is None:
        cmc = getattr(result, "cmc", None)
        if cmc is not None and len(cmc) >= k:
            value = cmc[k - 1]
    return math.nan if value is None else float(value)


def _html_set_result(result):
    """Table of a ``SetVerificationResult``: one row per outlier-removal (cluster) threshold."""
    e = _escape
    needed = ("thresholds", "results", "kept", "frames_total")
    if not all(hasattr(result, name) for name in needed) or not result.results:
        return f"<pre>{e(result.summary())}</pre>"
    fars = list(result.results[0].tar_at_far)
    head = "".join(f"<th>TAR@FAR {far:.0e}</th>" for far in fars)
    lines = [f"<table class='set-verification'><tr><th class='text'>cluster threshold</th>"
             f"<th>accuracy</th><th>verification threshold</th><th>AUC</th>{head}"
             f"<th>frames kept</th><th>sets reduced</th></tr>"]
    frames_total = np.asarray(result.frames_total)
    for threshold, verification, kept in zip(result.thresholds, result.results, result.kept):
        sizes = np.array([len(frames) for frames in kept])
        label = "none (all frames)" if threshold is None else f"{threshold:g}"
        cells = [
            f"<td class='text'>{e(label)}</td>",
            f"<td>{100 * verification.accuracy:.2f}% &plusmn; "
            f"{100 * verification.accuracy_std:.2f}</td>",
            f"<td>{verification.threshold:.4f}</td><td>{verification.auc:.4f}</td>",
        ]
        for far in fars:
            point = verification.tar_at_far[far]
            if point.reason:
                cells.append(f"<td>n/a<span class='reason'>{e(point.reason)}</span></td>")
            else:
                cells.append(f"<td>{100 * point.tar:.2f}%</td>")
        cells.append(f"<td>{int(sizes.sum())}/{int(frames_total.sum())}</td>")
        cells.append(f"<td>{int(np.count_nonzero(sizes < frames_total))}</td>")
        lines.append(f"<tr>{''.join(cells)}</tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _img(data_uri, alt):
    return f"<img class='figure' src='{data_uri}' alt='{_escape(alt)}'>"


# ----------------------------------------------------------------------------- Markdown


def _render_markdown(report, figures, montages, title, command_line):
    from kerasface import __version__

    m = _md
    lines = [f"# {m(title)}", "",
             f"Generated {m(_now())} by kerasface {m(__version__)}.", ""]
    if command_line:
        lines += ["```", str(command_line).replace("```", "'''"), "```", ""]
    lines += ["## Models", "", "| model | details | embedding |", "|---|---|---|"]
    for name in report.models:
        details = "<br>".join(f"**{m(k)}**: {m(v)}" for k, v in report.models_info[name].items())
        embeddings = getattr(report.evaluations[name][0], "embeddings", None)
        dim = f"{embeddings.shape[1]}-d" if getattr(embeddings, "ndim", 0) == 2 else "?"
        lines.append(f"| {m(name)} | {details} | {dim} |")
    lines += ["", "## Sets", "", "| set | source | pairs | genuine | impostor | images |",
              "|---|---|---:|---:|---:|---:|"]
    for vset in report.sets:
        genuine = int(np.count_nonzero(vset.issame))
        lines.append(f"| {m(vset.name)} | {m(getattr(vset, 'source', ''))} | {len(vset.pairs)} | "
                     f"{genuine} | {len(vset.pairs) - genuine} | {len(vset.images)} |")
    lines += ["", "## Summary", "",
              "| model | " + " | ".join(f"{m(v.name)}: accuracy | threshold | AUC"
                                      for v in report.sets) + " |",
              "|---|" + "---:|---:|---:|" * len(report.sets)]
    for name in report.models:
        cells = []
        for set_index in range(len(report.sets)):
            result = report.evaluations[name][set_index].result
            cells.append(f"{100 * result.accuracy:.2f}% ± {100 * result.accuracy_std:.2f} | "
                         f"{result.threshold:.4f} | {result.auc:.4f}")
        lines.append(f"| {m(name)} | " + " | ".join(cells) + " |")

    for set_index, vset in enumerate(report.sets):
        fars = _fars(report, set_index)
        lines += ["", f"## {m(vset.name)}", "",
                  f"![ROC on {m(vset.name)}]({figures['roc', set_index]})",
                  "", "### TAR at FAR", "",
                  "| model | " + " | ".join(f"FAR {far:.0e}" for far in fars) + " |",
                  "|---|" + "---:|" * len(fars)]
        notes = {}
        for name in report.models:
            points = report.evaluations[name][set_index].result.tar_at_far
            cells = []
            for far in fars:
                point = points.get(far)
                if point is None or point.reason or not math.isfinite(point.tar):
                    cells.append("n/a")
                    given = point is not None and point.reason
                    notes[far] = point.reason if given else "not computed"
                else:
                    cells.append(f"{100 * point.tar:.2f}%")
            lines.append(f"| {m(name)} | " + " | ".join(cells) + " |")
        if notes:
            lines.append("")
            lines += [f"n/a at FAR {far:.0e}: {m(reason)}." for far, reason in notes.items()]
        lines += ["", "### Genuine vs impostor scores", "",
                  f"![score histograms]({figures['scores', set_index]})"]
        for model_index, name in enumerate(report.models):
            for kind, heading in (("false_accepts", "Worst false accepts"),
                                  ("false_rejects", "Worst false rejects")):
                shown = report.pairs_shown[set_index][model_index, kind]
                if not shown:
                    continue
                lines += ["", f"### {heading}: {m(name)}", "",
                          f"![{heading}]({montages[set_index, model_index, kind]})", "",
                          f"{m(_explain(report, set_index, name, kind))}. Pairs left to right, "
                          "top to bottom.",
                          "", "| # | score | verdict | image a | image b | times listed |",
                          "|---:|---:|---|---|---|---:|"]
                lines += [f"| {p.rank} | {p.score:.4f} | {m(p.verdict)} | {m(p.names[0])} | "
                          f"{m(p.names[1])} | {p.copies} |" for p in shown]

    if report.identification:
        lines += ["", "## Identification", "", f"![CMC]({figures['cmc']})", "",
                  "| model | evaluated | protocol | searches | distractors | rank-1 | rank-5 |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for label, result in report.identification:
            lines.append(
                f"| {m(label)} | {m(getattr(result, 'name', '') or '')} | "
                f"{m(getattr(result, 'protocol', ''))} | "
                f"{m(getattr(result, 'num_probes', '?'))} | "
                f"{m(getattr(result, 'num_distractors', '?'))} | "
                f"{_percent(_rank(result, 1))} | {_percent(_rank(result, 5))} |"
            )
    if report.set_results:
        lines += ["", "## Set (video) verification"]
        for label, result in report.set_results:
            lines += ["", f"### {m(label)}", "", "```", result.summary(), "```"]
    if report.unreadable:
        lines += ["", "## Images that could not be shown", ""]
        lines += [f"- {m(item)}" for item in report.unreadable]
    return "\n".join(lines) + "\n"


def _save_montage(shown, path, per_row=4):
    """Draw pairs as tiles (two faces side by side, rank and score under them) into a PNG."""
    from PIL import Image, ImageDraw

    size, gap, caption = THUMBNAIL_SIZE, 8, 16
    tile_width, tile_height = 2 * size + 4, size + caption
    columns = min(per_row, len(shown))
    rows = math.ceil(len(shown) / columns)
    canvas = Image.new("RGB", (columns * (tile_width + gap) + gap,
                               rows * (tile_height + gap) + gap), "white")
    draw = ImageDraw.Draw(canvas)
    for position, pair in enumerate(shown):
        left = gap + (position % columns) * (tile_width + gap)
        top = gap + (position // columns) * (tile_height + gap)
        for face, image in enumerate(pair.images):
            x = left + face * (size + 4)
            if image is None:
                draw.rectangle([x, top, x + size - 1, top + size - 1], fill=(220, 220, 220))
                draw.text((x + 4, top + size // 2), "unreadable", fill=(90, 90, 90))
                continue
            with Image.open(io.BytesIO(image[1])) as face_image:
                face_image = face_image.convert("RGB").resize((size, size))
            canvas.paste(face_image, (x, top))
        color = (200, 0, 0) if pair.wrong else (0, 128, 0)
        draw.rectangle([left - 2, top - 2, left + tile_width + 1, top + tile_height + 1],
                       outline=color, width=2)
        listed = f" (listed x{pair.copies})" if pair.copies > 1 else ""
        draw.text((left + 2, top + size + 2),
                  f"#{pair.rank} score {pair.score:.4f} {pair.verdict}{listed}", fill=color)
    _make_parent(path)
    canvas.save(path, format="PNG")
    return path


# ----------------------------------------------------------------------------- helpers


def _escape(value):
    return html.escape(str(value), quote=True)


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]|#"})


def _md(value):
    """Text for a Markdown table cell or heading: HTML-escaped, Markdown syntax neutralised."""
    text = " ".join(str(value).split())
    return html.escape(text, quote=False).translate(_MD_SPECIAL)


def _percent(value, suffix="%"):
    if value is None:
        return "n/a"
    value = float(value)
    return "n/a" if math.isnan(value) else f"{100 * value:.2f}{suffix}"


def _number(value):
    return "n/a" if value is None or math.isnan(float(value)) else f"{float(value):.4f}"


def _data_uri(mime, content):
    return f"data:{mime};base64,{base64.b64encode(content).decode('ascii')}"


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _now():
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def _make_parent(path):
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)
