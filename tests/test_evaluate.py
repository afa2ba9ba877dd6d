"""``scenepriv evaluate``: method rows, dataset layouts, resumable results, tables, figures and the end-to-end CLI.

Most tests use the tiny float64 classifier (10 classes, 32x32 input) or a fake Places365 classifier built on
the same tiny network; one end-to-end run uses the embedded model on three example photos and three methods.
"""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import EXAMPLES, make_tiny_classifier
from scenepriv import MODELS, evaluate, metrics
from scenepriv.cli import main
from scenepriv.zoo import Classifier, places365

FIGURES = [f"{name}.{suffix}" for name in ("fig3_target_histograms", "tradeoff") for suffix in ("png", "pdf", "svg")]
OUTPUTS = ["table1.csv", "table1.md", "table2.csv", "table2.md", "results.jsonl", *FIGURES, "summary.md"]


def write_photo(path: Path, seed: int, size: tuple[int, int] = (40, 48)) -> Path:
    """A small random photo, values away from 0 and 255 so that steps are not clipped."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(30, 226, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def class_tree(root: Path, folders: dict[str, int]) -> Path:
    """``root/FOLDER/imgK.png`` with the given number of photos per folder."""
    seed = 0
    for folder, count in folders.items():
        for k in range(count):
            write_photo(root / folder / f"img{k}.png", seed)
            seed += 1
    return root


def fake_places365(name: str = "fake-places365") -> Classifier:
    tiny = make_tiny_classifier(num_classes=365)
    return Classifier(tiny.network, name=name, labels=places365.labels(), input_size=(32, 32),
                      mean=(0.5,) * 3, std=(0.25,) * 3)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ------------------------------------------------------------------------------------------------ rows


def test_paper_rows_are_table_1_in_order_with_the_papers_settings():
    rows = evaluate.select_rows("paper")
    assert [row.name for row in rows] == ["Orig.", "SoG (1I)", "SoG (8I)", "FG", "FG (6I)", "R-FG (1I)",
                                          "R-FG (3I)", "N-FG", "R-FG", "L-FG", "P-FG"]
    by_name = {row.name: row for row in rows}
    assert by_name["Orig."].method is None
    assert (by_name["SoG (8I)"].method, by_name["SoG (8I)"].overrides) == ("sog", {"iterations": 8})
    assert (by_name["R-FG (3I)"].method, by_name["R-FG (3I)"].overrides) == ("r-fgsm", {"iterations": 3})
    assert (by_name["FG"].method, by_name["FG"].overrides) == ("fgsm", {})
    assert (by_name["P-FG"].method, by_name["P-FG"].overrides) == ("p-fgsm", {})


def test_methods_by_method_or_row_name():
    rows = evaluate.select_rows("fgsm, R-FG (3I),p-fgsm,P-FG")
    assert [row.name for row in rows] == ["FG", "R-FG (3I)", "P-FG"]
    with pytest.raises(ValueError, match="unknown method or row 'pfgsm'.*p-fgsm"):
        evaluate.select_rows("pfgsm")


# ------------------------------------------------------------------------------------------------ datasets


def test_class_folders_match_names_case_insensitively_with_underscores_and_spaces(tmp_path, tiny_classifier):
    root = class_tree(tmp_path / "data", {"class_0": 3, "Class 7": 2, "CLASS_3": 1})
    dataset = evaluate.load_dataset(root, tiny_classifier.labels)
    assert dataset.layout == "class folders" and dataset.labelled
    # taken in turn over the classes (folders sorted by name), so that --limit keeps the classes balanced
    assert [(item.id, item.label) for item in dataset.items] == [
        ("CLASS_3/img0.png", 3), ("Class 7/img0.png", 7), ("class_0/img0.png", 0),
        ("Class 7/img1.png", 7), ("class_0/img1.png", 0), ("class_0/img2.png", 0)]
    limited = evaluate.load_dataset(root, tiny_classifier.labels, limit=3)
    assert {item.label for item in limited.items} == {0, 3, 7}


def test_unknown_class_folder_lists_close_matches(tmp_path, tiny_classifier):
    root = class_tree(tmp_path / "data", {"class_1": 1, "clas_4": 1, "kitchen": 1})
    with pytest.raises(evaluate.EvaluationError) as error:
        evaluate.load_dataset(root, tiny_classifier.labels)
    message = str(error.value)
    assert "folder 'clas_4' is not a class of the model (close matches: 'class 4'" in message
    assert "folder 'kitchen' is not a class of the model (no close match)" in message
    assert "\n" not in message


def test_class_folders_with_imagenet_names(tmp_path):
    """The embedded model's ImageNet names; 'Cardigan' (the corgi) and 'cardigan' (the sweater) stay apart."""
    labels = MODELS["efficientnet-lite0"].labels()
    root = class_tree(tmp_path / "data", {"Cardigan": 1, "cardigan": 1, "golden_retriever": 1, "Alp": 1})
    items = evaluate.load_dataset(root, labels).items
    assert {item.id.split("/")[0]: labels[item.label] for item in items} == {
        "Cardigan": "Cardigan", "cardigan": "cardigan", "golden_retriever": "golden retriever", "Alp": "alp"}
    shutil.move(root / "golden_retriever", root / "goldenretriever")
    with pytest.raises(evaluate.EvaluationError, match="'goldenretriever' is not a class.*matches: 'golden retriever'"):
        evaluate.load_dataset(root, labels)


def test_places365_validation_layout(tmp_path):
    root = tmp_path / "places"
    for name in ("Places365_val_00000001.jpg", "Places365_val_00000002.jpg", "Places365_val_00000003.jpg"):
        write_photo(root / "val_256" / name, seed=len(name))
    (root / "places365_val.txt").write_text(
        "Places365_val_00000001.jpg 165\nPlaces365_val_00000002.jpg 52\nPlaces365_val_00000003.jpg 0\n")
    dataset = evaluate.load_dataset(root, places365.labels())
    assert dataset.layout == "places365_val.txt"
    assert [(item.id, item.label) for item in dataset.items] == [
        ("Places365_val_00000001.jpg", 165), ("Places365_val_00000002.jpg", 52), ("Places365_val_00000003.jpg", 0)]
    assert dataset.items[0].path == root / "val_256" / "Places365_val_00000001.jpg"
    private = evaluate.load_dataset(root, places365.labels(), private_classes=True)
    assert [item.label for item in private.items] == [52]  # bedroom; greenhouse/indoor and airfield are not
    with pytest.raises(evaluate.EvaluationError, match="use a \\*-places365 model"):
        evaluate.load_dataset(root, [f"class {i}" for i in range(10)])
    (root / "val_256" / "Places365_val_00000002.jpg").unlink()
    with pytest.raises(evaluate.EvaluationError, match="1 of the 3 images listed .* Places365_val_00000002.jpg"):
        evaluate.load_dataset(root, places365.labels())


def test_private_classes_need_a_places365_model_and_labels(tmp_path, tiny_classifier):
    assert len(evaluate.private_class_indices()) == 60
    assert places365.labels()[52] == "bedroom" and 52 in evaluate.private_class_indices()
    root = class_tree(tmp_path / "data", {"class_1": 1})
    with pytest.raises(evaluate.EvaluationError, match="--private-classes selects Places365 classes"):
        evaluate.load_dataset(root, tiny_classifier.labels, private_classes=True)
    flat = tmp_path / "flat"
    write_photo(flat / "a.png", 0)
    with pytest.raises(evaluate.EvaluationError, match="--private-classes needs labels"):
        evaluate.load_dataset(flat, places365.labels(), private_classes=True)


def test_flat_folder_is_unlabelled_and_mixed_layouts_are_refused(tmp_path, tiny_classifier):
    flat = tmp_path / "flat"
    for k in range(3):
        write_photo(flat / f"photo{k}.png", k)
    (flat / "notes.txt").write_text("not a photo")
    dataset = evaluate.load_dataset(flat, tiny_classifier.labels)
    assert dataset.layout == "unlabelled folder" and not dataset.labelled
    assert [(item.id, item.label) for item in dataset.items] == [(f"photo{k}.png", None) for k in range(3)]
    write_photo(flat / "class_1" / "x.png", 9)
    with pytest.raises(evaluate.EvaluationError, match="both class folders and loose photos"):
        evaluate.load_dataset(flat, tiny_classifier.labels)
    with pytest.raises(evaluate.EvaluationError, match="no such folder"):
        evaluate.load_dataset(tmp_path / "missing", tiny_classifier.labels)


# ------------------------------------------------------------------------------------------------ running


def test_paper_rows_on_class_folders_write_every_output(tmp_path, tiny_classifier):
    root = class_tree(tmp_path / "data", {"class_1": 2, "class_2": 2})
    dataset = evaluate.load_dataset(root, tiny_classifier.labels)
    rows = evaluate.select_rows("paper")
    output = tmp_path / "out"
    assert evaluate.evaluate(dataset, tiny_classifier, rows, output, seed=0, batch_size=3) == []
    for name in OUTPUTS:
        assert (output / name).stat().st_size > 0, name
    records = read_jsonl(output / "results.jsonl")
    assert len(records) == 4 * 11 and len({(r["image"], r["row"]) for r in records}) == 44
    table = read_csv(output / "table1.csv")
    assert [entry["row"] for entry in table] == [row.name for row in rows]
    by_row = {entry["row"]: entry for entry in table}
    assert by_row["Orig."]["SSIM"] == by_row["Orig."]["PSNR"] == ""  # no perturbation: BRISQUE only
    assert float(by_row["Orig."]["BRISQUE"]) > 0
    # one step of eps = 0.007 moves every (unclipped) pixel by 2 grey levels: 20 log10(255 / 2) dB
    assert float(by_row["FG"]["PSNR"]) == pytest.approx(42.11, abs=0.01)
    assert float(by_row["R-FG (3I)"]["iterations"]) == 3 and float(by_row["SoG (8I)"]["iterations"]) == 8
    for record in records:
        assert record["label"] == int(record["image"].split("/")[0].split("_")[1])
        assert record["label_source"] == "class folders"
        assert record["assigned"] == record["top5"][0] and len(record["top5"]) == 5
        if record["row"] in ("L-FG", "R-FG", "P-FG") and record["success"]:
            assert record["assigned"] == record["target"]
    # table values follow from the records
    p_records = [r for r in records if r["row"] == "P-FG"]
    second = {entry["row"]: entry for entry in read_csv(output / "table2.csv")}
    assert float(second["P-FG"]["irreversibility"]) == pytest.approx(metrics.irreversibility(
        [r["label"] for r in p_records], [r["assigned"] for r in p_records], 10), abs=1e-4)
    assert float(by_row["P-FG"]["T1"]) == pytest.approx(
        100 * np.mean([r["assigned"] == r["label"] for r in p_records]), abs=1e-4)
    summary = (output / "summary.md").read_text()
    assert "not comparable" in summary and "MATLAB" in summary and "from the class folders" in summary
    assert "Each as PNG, PDF, SVG" in summary


def test_metrics_are_those_of_the_saved_8_bit_images(tmp_path, tiny_classifier):
    root = tmp_path / "flat"
    write_photo(root / "a.png", 1, size=(50, 70))
    dataset = evaluate.load_dataset(root, tiny_classifier.labels)
    output = tmp_path / "out"
    evaluate.evaluate(dataset, tiny_classifier, evaluate.select_rows("original,r-fgsm"), output, seed=0,
                      save_images=True)
    original = np.asarray(Image.open(output / "images" / "Orig." / "a.png"))
    protected = np.asarray(Image.open(output / "images" / "R-FG" / "a.png"))
    assert original.shape == protected.shape == (32, 32, 3)
    records = {r["row"]: r for r in read_jsonl(output / "results.jsonl")}
    assert records["R-FG"]["psnr"] == pytest.approx(metrics.psnr(original, protected))
    assert records["R-FG"]["ssim"] == pytest.approx(metrics.ssim(original, protected))
    assert records["R-FG"]["brisque"] == pytest.approx(metrics.brisque(protected))
    assert records["Orig."]["brisque"] == pytest.approx(metrics.brisque(original))
    with torch.inference_mode():
        logits = tiny_classifier(torch.from_numpy(protected.copy()).permute(2, 0, 1)[None].float() / 255)
    assert records["R-FG"]["assigned"] == int(logits.argmax())


def test_unlabelled_folder_uses_the_clean_top1_and_says_so(tmp_path, tiny_classifier):
    root = tmp_path / "flat"
    for k in range(3):
        write_photo(root / f"p{k}.png", 10 + k)
    output = tmp_path / "out"
    evaluate.evaluate(evaluate.load_dataset(root, tiny_classifier.labels), tiny_classifier,
                      evaluate.select_rows("original,fgsm"), output)
    records = read_jsonl(output / "results.jsonl")
    assert {r["label_source"] for r in records} == {"clean top-1"}
    table = {entry["row"]: entry for entry in read_csv(output / "table1.csv")}
    assert float(table["Orig."]["T1"]) == 100.0
    assert "clean top-1" in (output / "summary.md").read_text()


def test_rerun_resumes_and_recomputes_nothing(tmp_path, tiny_classifier, monkeypatch):
    root = class_tree(tmp_path / "data", {"class_1": 2, "class_4": 1})
    dataset = evaluate.load_dataset(root, tiny_classifier.labels)
    output = tmp_path / "out"
    evaluate.evaluate(dataset, tiny_classifier, evaluate.select_rows("fgsm"), output, seed=0)
    first = (output / "results.jsonl").read_text()
    calls = []
    real_protect = evaluate.run.protect
    monkeypatch.setattr(evaluate.run, "protect", lambda images, *a, **k: calls.append(len(images)) or real_protect(
        images, *a, **k))
    evaluate.evaluate(dataset, tiny_classifier, evaluate.select_rows("fgsm"), output, seed=0)
    assert calls == [] and (output / "results.jsonl").read_text() == first
    # a new method runs only that method; an interrupted last line is ignored
    with open(output / "results.jsonl", "a") as stream:
        stream.write('{"image": "class_1/img0.png", "ro')
    evaluate.evaluate(dataset, tiny_classifier, evaluate.select_rows("fgsm,n-fgsm"), output, seed=0)
    assert calls == [3]
    records = evaluate.read_results(output / "results.jsonl")
    assert sorted((r["row"], r["image"]) for r in records) == sorted(
        (row, item.id) for row in ("FG", "N-FG") for item in dataset.items)
    assert [entry["row"] for entry in read_csv(output / "table1.csv")] == ["FG", "N-FG"]
    with pytest.raises(evaluate.EvaluationError, match="holds results of model 'tiny'"):
        evaluate.evaluate(dataset, fake_places365("other"), evaluate.select_rows("fgsm"), output)


def test_private_classes_with_a_places365_model_and_the_papers_numbers(tmp_path):
    root = class_tree(tmp_path / "data", {"bedroom": 2, "church_indoor": 1, "airfield": 2, "Bus Station Indoor": 1})
    classifier = fake_places365("resnet50-places365")
    dataset = evaluate.load_dataset(root, classifier.labels, private_classes=True)
    assert sorted({classifier.labels[item.label] for item in dataset.items}) == [
        "bedroom", "bus_station/indoor", "church/indoor"]  # airfield is not a private class
    output = tmp_path / "out"
    evaluate.evaluate(dataset, classifier, evaluate.select_rows("original,p-fgsm"), output, seed=1)
    records = read_jsonl(output / "results.jsonl")
    assert len(records) == 4 * 2 and "airfield" not in {r["label_name"] for r in records}
    summary = (output / "summary.md").read_text()
    assert "| *P-FG (paper)* | 0.00 | 5.60 | 0.990 (0.010) | 39.99 (2.72) | 23.85 (8.28) |" in summary
    assert "| *Orig. (paper)* | 56.40 | 86.47 |  |  | 26.71 (8.66) |" in summary
    assert "| 0.1416 |" in summary and "private classes" in summary


def test_unreadable_photo_is_reported_and_skipped(tmp_path, tiny_classifier):
    root = tmp_path / "flat"
    write_photo(root / "good.png", 0)
    (root / "broken.png").write_bytes(b"not a png")
    output = tmp_path / "out"
    failures = evaluate.evaluate(evaluate.load_dataset(root, tiny_classifier.labels), tiny_classifier,
                                 evaluate.select_rows("fgsm"), output)
    assert len(failures) == 1 and "broken.png" in failures[0]
    assert [r["image"] for r in read_jsonl(output / "results.jsonl")] == ["good.png"]


def test_figures_are_png_pdf_and_svg_and_fig3_names_the_most_assigned_classes(tmp_path):
    records = [{"row": "P-FG", "image": f"{k}", "label": 0, "assigned": assigned}
               for k, assigned in enumerate([7, 7, 7, 3, 3, 5])]
    classes = [f"class number {i}" for i in range(10)]
    path = tmp_path / "fig3.png"
    evaluate.figure_histograms(records, evaluate.select_rows("p-fgsm"), classes, path)

    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > 1000
    assert (tmp_path / "fig3.pdf").read_bytes().startswith(b"%PDF")
    svg = (tmp_path / "fig3.svg").read_text(encoding="utf-8")  # text kept as text: the names can be read
    named = [name for name in classes if f">{name}<" in svg]
    assert named == ["class number 3", "class number 5", "class number 7"]  # the three assigned, no other
    assert svg.index(">class number 7<") < svg.index(">class number 3<") < svg.index(">class number 5<")  # by share
    assert "uniform: 10%" in svg and "50.0%" in svg and "3 of 10 classes assigned" in svg


def label_boxes(figure) -> tuple[list, list]:
    """The display boxes of the point labels (their text, without a leader line) and the points of the trade-off
    plot."""
    from matplotlib.text import Text

    [axis] = figure.axes
    renderer = figure.canvas.get_renderer()
    labels = [text for text in axis.texts if text.get_text() != "Orig. (no perturbation)"]
    points = [axis.transData.transform(offset) for collection in axis.collections for offset in
              collection.get_offsets()]
    for text in labels:
        text.update_positions(renderer)  # where the annotation's text goes, then its box without the line
    return [(text.get_text(), Text.get_window_extent(text, renderer)) for text in labels], points


def test_tradeoff_labels_overlap_neither_each_other_nor_the_points():
    from matplotlib import pyplot

    near = {"Orig.": (math.nan, 100), "SoG (1I)": (42.1, 99), "FG": (42.1, 10), "N-FG": (41.9, 11),
            "R-FG (1I)": (42.0, 12), "R-FG": (33.7, 1), "L-FG": (34.1, 0), "P-FG": (34.4, 2), "FG (6I)": (27.4, 16),
            "R-FG (3I)": (34.2, 0.5)}  # three and four rows within a label's size of each other
    figure = evaluate.report.tradeoff_figure([{"row": row, "PSNR": psnr, "T5": top5}
                                              for row, (psnr, top5) in near.items()])
    labels, points = label_boxes(figure)
    assert sorted(name for name, _ in labels) == sorted(set(near) - {"Orig."})
    for k, (name, box) in enumerate(labels):
        assert all(not box.overlaps(other) for _, other in labels[k + 1:]), name
        assert all(not box.contains(x, y) for x, y in points), name
        assert figure.axes[0].get_window_extent().contains(box.x0, box.y0), name
    pyplot.close(figure)


def test_table1_says_mean_and_std_and_table2_warns_with_one_image_per_class(tmp_path, tiny_classifier, capsys):
    singles = tmp_path / "singles"
    evaluate.evaluate(evaluate.load_dataset(class_tree(tmp_path / "one", {"class_1": 1, "class_2": 1}),
                                            tiny_classifier.labels), tiny_classifier,
                      evaluate.select_rows("fgsm"), singles, seed=0)
    warning = capsys.readouterr().err
    assert warning.startswith("warning: irreversibility (Table 2) means nothing here: 2 of 2 true classes")
    assert "sqrt(1 - 1/10) = 0.9487 whatever the method; evaluate several images per class" in warning
    assert warning.count("\n") == 1
    header = (singles / "table1.md").read_text().splitlines()[0]
    assert all(f"{name} mean (std)" in header for name in ("SSIM ↑", "PSNR ↑", "BRISQUE ↓", "butteraugli ↓"))
    assert "means nothing here" in (singles / "table2.md").read_text()
    assert "means nothing here" in (singles / "summary.md").read_text()

    pairs = tmp_path / "pairs"
    evaluate.evaluate(evaluate.load_dataset(class_tree(tmp_path / "two", {"class_1": 2, "class_2": 2}),
                                            tiny_classifier.labels), tiny_classifier,
                      evaluate.select_rows("fgsm"), pairs, seed=0)
    assert "warning" not in capsys.readouterr().err
    table2 = (pairs / "table2.md").read_text()
    assert "Warning" not in table2 and "lies between 0.6325 (each class's images sent to different classes) and " \
        "0.9487 (all sent to one class)" in table2  # sqrt(1/2 - 1/10) and sqrt(1 - 1/10)


def test_the_warning_counts_images_not_rows_and_gives_the_range_when_some_classes_have_several():
    def records(labels: list[int]) -> list[dict]:
        return [{"row": row, "image": f"{k}.png", "label": label, "assigned": 0}
                for row in ("FG", "P-FG") for k, label in enumerate(labels)]

    assert evaluate.irreversibility_warning(records([1, 1, 2, 2, 3]), 10) is None  # 1 of 3 classes single
    warning = evaluate.irreversibility_warning(records([1, 1, 2, 3]), 10)  # 2 of 3: one image each
    low, high = evaluate.irreversibility_range([1, 1, 2, 3], 10)
    assert warning.startswith("irreversibility (Table 2) means little here: 2 of 3 true classes have a single image")
    assert f"every method lands between {low:.4f} and {high:.4f}" in warning and low < high


@pytest.mark.parametrize("sizes", [[1, 1, 1], [2, 1], [3, 5, 12], [7]])
def test_irreversibility_range_is_reached_by_the_best_and_worst_assignments(sizes):
    classes = 5
    labels = [c for c, n in enumerate(sizes) for _ in range(n)]
    spread = [k % classes for n in sizes for k in range(n)]  # each class's images to as many classes as can be
    lumped = [0 for n in sizes for _ in range(n)]
    low, high = evaluate.irreversibility_range(labels, classes)
    assert low == pytest.approx(metrics.irreversibility(labels, spread, classes))
    assert high == pytest.approx(metrics.irreversibility(labels, lumped, classes))
    rng = np.random.default_rng(0)
    for _ in range(20):  # no assignment leaves the range
        assert low - 1e-12 <= metrics.irreversibility(labels, rng.integers(0, classes, len(labels)), classes) <= \
            high + 1e-12


def test_progress_bar_names_the_row_at_work_and_counts_results(tmp_path, tiny_classifier, capsys):
    dataset = evaluate.load_dataset(class_tree(tmp_path / "data", {"class_1": 2, "class_3": 1}),
                                    tiny_classifier.labels)
    evaluate.evaluate(dataset, tiny_classifier, evaluate.select_rows("fgsm,p-fgsm"), tmp_path / "on", seed=0,
                      progress=True)
    bar = capsys.readouterr().err
    assert "evaluate FG" in bar and "evaluate P-FG" in bar and "6/6" in bar and "result" in bar
    evaluate.evaluate(dataset, tiny_classifier, evaluate.select_rows("fgsm"), tmp_path / "off", seed=0,
                      progress=False)
    assert "evaluate" not in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_end_to_end_with_the_embedded_model(tmp_path, capsys):
    """CI's end-to-end run: three example photos (of four, --limit 3), three methods, then a resumed rerun."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("home.jpg", "leuvenA.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg", "life_by_Aitzol_Berasategi.jpg"):
        shutil.copy(EXAMPLES / name, photos / name)
    output = tmp_path / "results"
    args = ["evaluate", str(photos), "-o", str(output), "--methods", "fgsm,n-fgsm,p-fgsm", "--limit", "3",
            "--seed", "0", "--device", "cpu"]
    assert main(args) == 0
    for name in OUTPUTS:
        assert (output / name).stat().st_size > 0, name
    records = read_jsonl(output / "results.jsonl")
    assert len(records) == 9 and {r["model"] for r in records} == {"efficientnet-lite0"}
    table = {entry["row"]: entry for entry in read_csv(output / "table1.csv")}
    assert list(table) == ["FG", "N-FG", "P-FG"]
    assert float(table["P-FG"]["T1"]) == 0.0 and float(table["N-FG"]["T1"]) == 0.0
    assert float(table["P-FG"]["PSNR"]) > 30 and float(table["FG"]["PSNR"]) == pytest.approx(42.1, abs=0.2)
    out = capsys.readouterr().out
    assert "| P-FG |" in out and "summary.md" in out and "SSIM ↑ mean (std)" in out
    first = (output / "results.jsonl").read_text()
    assert main(args) == 0
    assert (output / "results.jsonl").read_text() == first


def test_cli_errors_are_one_line(tmp_path, capsys):
    root = class_tree(tmp_path / "data", {"tabby_cats": 1})
    def error_of(*args: str) -> str:
        code = main(["evaluate", *args, "-o", str(tmp_path / "out")])
        [line] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        assert code == 1
        return line

    assert re.match(r"^error: .*'tabby_cats' is not a class of the model .*'tabby'", error_of(str(root)))
    assert error_of(str(root), "--methods", "x").startswith("error: unknown method or row 'x'")
    tabby = class_tree(tmp_path / "tabby", {"tabby": 1})
    assert error_of(str(tabby), "--private-classes").startswith(
        "error: --private-classes selects Places365 classes")
    assert not (tmp_path / "out").exists()


def test_transfer_to_adds_the_accuracy_of_models_not_protected_against(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("home.jpg", "leuvenA.jpg"):
        shutil.copy(EXAMPLES / name, photos / name)
    output = tmp_path / "results"
    assert main(["evaluate", str(photos), "-o", str(output), "--methods", "p-fgsm", "--seed", "0",
                 "--transfer-to", "efficientnet-lite2"]) == 0

    records = read_jsonl(output / "results.jsonl")
    assert all(len(r["transfer"]["efficientnet-lite2"]) == 5 for r in records)
    table = {entry["row"]: entry for entry in read_csv(output / "table1.csv")}
    for row, entry in table.items():  # recomputed from the records: top-1/top-5 of Lite2 against the labels
        rs = [r for r in records if r["row"] == row]
        expected = 100 * sum(r["label"] == r["transfer"]["efficientnet-lite2"][0] for r in rs) / len(rs)
        assert float(entry["T1 efficientnet-lite2"]) == pytest.approx(expected)
        assert float(entry["T5 efficientnet-lite2"]) >= float(entry["T1 efficientnet-lite2"])
    assert "T1 efficientnet-lite2" in (output / "table1.md").read_text()
