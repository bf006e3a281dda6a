"""Confusion figures drawn by scikit-learn's ConfusionMatrixDisplay: every cell its recall and its count."""

import numpy as np

from msir_keras import plots

# A four-class test fold as MSIR gives one on EmoDB (rows: angry, happy, neutral, sad).
MATRIX = np.array([[100, 20, 5, 2], [30, 35, 5, 1], [3, 4, 60, 12], [0, 1, 10, 51]])
NAMES = ["angry", "happy", "neutral", "sad"]


def test_confusion_cells_show_recall_and_count_readably():
    plt = plots._pyplot()
    figure, axes = plt.subplots()
    image = plots.draw_confusion(axes, MATRIX, NAMES)
    shares = MATRIX / MATRIX.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(image.get_array(), shares)
    assert image.get_clim() == (0, 1)  # one colour scale for every figure, whatever the data's range
    cells = {(text.get_position()[1], text.get_position()[0]): text for text in axes.texts}
    assert cells[(1, 0)].get_text() == "42.3%\n(30)"
    # Dark cells (recall above 0.55) carry white text; 42.3 % happy-as-angry stays black on light blue.
    assert cells[(0, 0)].get_color() == "white" and cells[(1, 0)].get_color() == "black"
    assert [label.get_text() for label in axes.get_yticklabels()] == NAMES
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("predicted", "true")
    plt.close(figure)


def test_confusion_figures_are_written(tmp_path):
    single = plots.plot_confusion(MATRIX, NAMES, str(tmp_path / "confusion.png"), title="test UAR 74.3%")
    absent = MATRIX.copy()
    absent[2] = 0  # a class the test speakers lack: its row is empty, not NaN
    plots.plot_confusion(absent, NAMES, str(tmp_path / "absent.png"))
    detection = plots.plot_detection_confusions({"angry": [[200, 30], [20, 80]], "sad": [[250, 10], [30, 40]]},
                                                str(tmp_path / "fig4.png"))
    for path in (single, detection, tmp_path / "absent.png"):
        with open(path, "rb") as png:
            assert png.read(8) == b"\x89PNG\r\n\x1a\n"
