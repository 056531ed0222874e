"""Detection metrics: IoU, IoU-matched true positives, average precision and FROC.

Boxes are `(x0, y0, x1, y1)` in pixels (x the column, y the row), as in the record table.
One image's detections are matched to its ground-truth boxes greedily by descending score:
a detection is a true positive when its best still-unmatched ground-truth box overlaps it
with IoU >= the threshold (0.5, the survey's example); a second detection of a lesion already
found is a false positive. This is COCO's rule (pycocotools `evaluateImg`: a detection takes
the best lesion not yet matched), not the PASCAL VOC devkit's (a detection whose single best
lesion is already taken is a false positive even when another lesion overlaps it enough).

Tied scores: one threshold keeps all detections of equal score or none of them, so AP and
FROC are read only at the end of each run of equal scores. Points inside a run are not
operating points any threshold reaches, and would make the result depend on the order in
which tied detections are listed. Pooled over images, the matches give

    AP           area under the all-point interpolated precision-recall curve (PASCAL VOC 2010+);
                 with one class (mass) mAP = AP
    FROC         sensitivity (found lesions / all lesions) against false positives per image,
                 read at 0.5, 1 and 2 FP/image as in mammography CAD papers

Reference: Hamed et al. 2020, Sec. 3.1, Eqs. (7) IoU and (8) mAP; Everingham et al. 2010
(VOC AP); Bunch et al. 1978 (FROC).
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mammo_keras.fileio import atomic_write_bytes

FP_RATES = (0.5, 1.0, 2.0)


def _as_boxes(boxes, what: str) -> np.ndarray:
    array = np.asarray(boxes, dtype=np.float64)
    if array.size == 0:
        return np.zeros((0, 4))
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"{what} must have shape (n, 4) as (x0, y0, x1, y1). Received: shape={array.shape}")
    return array


def iou(boxes_a, boxes_b) -> np.ndarray:
    """Pairwise IoU (area of overlap / area of union) of two box sets, shape (len(a), len(b)).

    Reference: Hamed et al. 2020, Eq. (7).
    """
    a, b = _as_boxes(boxes_a, "boxes_a"), _as_boxes(boxes_b, "boxes_b")
    width = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    height = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    overlap = width * height
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - overlap
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, overlap / union, 0.0)


def match(pred_boxes, scores, gt_boxes, *, iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Greedy score-ordered matching of one image's detections to its ground truth.

    Returns:
        (is_tp per detection in the input order, IoU of each detection with the box it matched
        or its best overlap when it matched none).
    """
    pred, gt = _as_boxes(pred_boxes, "pred_boxes"), _as_boxes(gt_boxes, "gt_boxes")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(pred):
        raise ValueError(f"one score per detection is needed. Received: {len(pred)} boxes, {len(scores)} scores")
    bad = ~np.isfinite(scores)
    if bad.any():  # a NaN would sort after every score and give FROC a point at threshold NaN
        raise ValueError(f"detection scores must be finite (no NaN or infinity). Received: {int(bad.sum())} bad "
                         f"of {len(scores)}, scores[bad]={scores[bad][:5].tolist()}")
    is_tp = np.zeros(len(pred), dtype=bool)
    best = np.zeros(len(pred))
    if len(pred) == 0 or len(gt) == 0:
        return is_tp, best
    overlaps = iou(pred, gt)
    taken = np.zeros(len(gt), dtype=bool)
    for index in np.argsort(-scores, kind="stable"):
        candidates = np.where(taken, -1.0, overlaps[index])
        target = int(np.argmax(candidates))
        best[index] = overlaps[index].max()
        if candidates[target] >= iou_threshold:
            is_tp[index], taken[target] = True, True
            best[index] = candidates[target]
    return is_tp, best


def _pooled(detections: Sequence[tuple], ground_truth: Sequence, iou_threshold: float):
    if len(detections) != len(ground_truth):
        raise ValueError("detections and ground_truth need one entry per image. "
                         f"Received: {len(detections)} and {len(ground_truth)}")
    scores, hits = [], []
    n_lesions = 0
    for (boxes, image_scores), gt in zip(detections, ground_truth):
        gt = _as_boxes(gt, "gt_boxes")
        is_tp, _ = match(boxes, image_scores, gt, iou_threshold=iou_threshold)
        scores.append(np.asarray(image_scores, dtype=np.float64).reshape(-1))
        hits.append(is_tp)
        n_lesions += len(gt)
    scores = np.concatenate(scores) if scores else np.zeros(0)
    hits = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    order = np.argsort(-scores, kind="stable")
    return scores[order], hits[order], n_lesions


def _run_ends(sorted_scores: np.ndarray) -> np.ndarray:
    """Indices of the last detection of each run of equal scores (scores sorted descending)."""
    if len(sorted_scores) == 0:
        return np.zeros(0, dtype=int)
    return np.flatnonzero(np.append(sorted_scores[1:] != sorted_scores[:-1], True))


def average_precision(detections: Sequence[tuple], ground_truth: Sequence, *,
                      iou_threshold: float = 0.5) -> float:
    """All-point interpolated AP of detections pooled over images (NaN when there is no lesion).

    Args:
        detections: per image, `(boxes (n, 4), scores (n,))`.
        ground_truth: per image, boxes (m, 4) (an empty array for a normal image).

    Precision and recall are taken at each distinct score (the end of each run of tied scores),
    as scikit-learn's `average_precision_score` does, so the order of tied detections does not
    matter.

    Reference: Hamed et al. 2020, Eq. (8) (mAP = mean AP over classes; one class here).
    """
    scores, hits, n_lesions = _pooled(detections, ground_truth, iou_threshold)
    if n_lesions == 0:
        return float("nan")
    if len(hits) == 0:
        return 0.0
    ends = _run_ends(scores)
    tp = np.cumsum(hits)[ends]
    recall = tp / n_lesions
    precision = tp / (ends + 1)
    recall = np.concatenate([[0.0], recall, [recall[-1]]])
    precision = np.concatenate([[0.0], precision, [0.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    steps = np.flatnonzero(recall[1:] != recall[:-1])
    return float(np.sum((recall[steps + 1] - recall[steps]) * precision[steps + 1]))


def froc(detections: Sequence[tuple], ground_truth: Sequence, *,
         iou_threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FROC points at every distinct score threshold: (fp_per_image, sensitivity, threshold),
    starting at (0, 0); one point per run of tied scores (the point after the whole run)."""
    scores, hits, n_lesions = _pooled(detections, ground_truth, iou_threshold)
    n_images = max(len(ground_truth), 1)
    ends = _run_ends(scores)
    tp = np.concatenate([[0], np.cumsum(hits)[ends]])
    fp = np.concatenate([[0], np.cumsum(~hits)[ends]])
    sensitivity = tp / n_lesions if n_lesions else np.full(len(tp), np.nan)
    thresholds = np.concatenate([[np.inf], scores[ends]])
    return fp / n_images, sensitivity, thresholds


def sensitivity_at(fp_per_image: np.ndarray, sensitivity: np.ndarray,
                   rates: Sequence[float] = FP_RATES) -> dict[float, float]:
    """Highest sensitivity reached with at most `rate` false positives per image, for each rate.

    A step reading (no interpolation): the operating point a threshold can actually reach.
    """
    return {float(rate): float(np.max(sensitivity[fp_per_image <= rate + 1e-12])) for rate in rates}


def evaluate(detections: Sequence[tuple], ground_truth: Sequence, *, iou_threshold: float = 0.5,
             rates: Sequence[float] = FP_RATES) -> dict[str, float]:
    """AP, sensitivity at each FP rate, overall sensitivity and mean IoU of the found lesions."""
    fp_per_image, sensitivity, _ = froc(detections, ground_truth, iou_threshold=iou_threshold)
    result = {"ap": average_precision(detections, ground_truth, iou_threshold=iou_threshold)}
    for rate, value in sensitivity_at(fp_per_image, sensitivity, rates).items():
        result[f"sens_at_{rate:g}fpi"] = value
    result["sensitivity_all"] = float(sensitivity[-1])
    result["fp_per_image_all"] = float(fp_per_image[-1])
    ious = [match(b, s, g, iou_threshold=iou_threshold) for (b, s), g in zip(detections, ground_truth)]
    found = np.concatenate([o[is_tp] for is_tp, o in ious]) if ious else np.zeros(0)
    result["mean_iou_tp"] = float(found.mean()) if len(found) else float("nan")
    return result


def bootstrap(detections: Sequence[tuple], ground_truth: Sequence, *, n_replicates: int = 1000,
              seed: int = 0, iou_threshold: float = 0.5, rates: Sequence[float] = FP_RATES,
              level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile CIs of `evaluate`'s metrics, resampling whole images with replacement."""
    rng = np.random.default_rng(seed)
    n = len(ground_truth)
    samples: dict[str, list[float]] = {}
    for _ in range(n_replicates):
        pick = rng.integers(0, n, size=n)
        values = evaluate([detections[i] for i in pick], [ground_truth[i] for i in pick],
                          iou_threshold=iou_threshold, rates=rates)
        for key, value in values.items():
            samples.setdefault(key, []).append(value)
    alpha = (1.0 - level) / 2.0
    out = {}
    for key, values in samples.items():
        finite = np.asarray(values)[np.isfinite(values)]
        out[key] = ((float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
                    if len(finite) else (float("nan"), float("nan")))
    return out


def draw_boxes(image: np.ndarray, out_png: str | Path, *, gt_boxes=(), pred_boxes=(), scores=(),
               is_tp=None, max_boxes: int = 5) -> Path:
    """Save a grey image with ground truth (green) and the top-scoring detections drawn on it.

    True positives are yellow, false positives red, each labelled with its score.
    """
    from PIL import Image, ImageDraw

    pixels = np.asarray(image, dtype=np.float64)
    if pixels.ndim == 3:
        pixels = pixels[..., 0]
    span = pixels.max() - pixels.min()
    grey = ((pixels - pixels.min()) / span * 255 if span > 0 else np.zeros_like(pixels)).astype(np.uint8)
    canvas = Image.fromarray(grey).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 200))
    for box in _as_boxes(gt_boxes, "gt_boxes"):
        draw.rectangle([float(v) for v in box], outline=(0, 220, 0), width=width)
    pred, scores = _as_boxes(pred_boxes, "pred_boxes"), np.asarray(scores, dtype=np.float64).reshape(-1)
    hits = np.zeros(len(pred), dtype=bool) if is_tp is None else np.asarray(is_tp, dtype=bool)
    for index in np.argsort(-scores, kind="stable")[:max_boxes]:
        colour = (255, 220, 0) if hits[index] else (255, 40, 40)
        draw.rectangle([float(v) for v in pred[index]], outline=colour, width=width)
        draw.text((float(pred[index][0]) + 2, float(pred[index][1]) + 1), f"{scores[index]:.2f}", fill=colour)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return atomic_write_bytes(out_png, buffer.getvalue())
