import pytest

from lookalike.errors import LabelsError
from lookalike.load.labels import folder_labels, label_set, load_labels, read_labels_csv

KNOWN = ["a/1.png", "a/2.png", "b/1.png"]


def write(tmp_path, text, encoding="utf-8"):
    path = tmp_path / "labels.csv"
    path.write_bytes(text.encode(encoding))
    return path


def test_folders_take_the_parent_folder_name():
    labels = folder_labels([*KNOWN, "top.png"])
    assert labels.column() == {"a/1.png": "a", "a/2.png": "a", "b/1.png": "b"}


def test_csv_with_several_tasks_and_empty_cells(tmp_path):
    path = write(tmp_path, "file,character,hair\na/1.png,x,red\n./a/2.png,x,\nb/1.png,,blue\n")
    labels = read_labels_csv(path, KNOWN)
    assert labels.tasks == ["character", "hair"]
    assert labels.column("character") == {"a/1.png": "x", "a/2.png": "x"}
    assert labels.column("hair") == {"a/1.png": "red", "b/1.png": "blue"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,label\na/1.png,x\n", r"labels.csv:1: needs a header with a 'file' column"),
        ("file\na/1.png\n", "no label column"),
        ("file,label\na/1.png,x\na/1.png,x\n", r"labels.csv:3: a/1.png is listed again .*line 2"),
        ("file,label\n../etc/passwd,x\n", r"labels.csv:2: '../etc/passwd' points outside"),
        ("file,label\n/abs/1.png,x\n", "points outside"),
        ("file,label\na/1.png,x\nzzz.png,y\n", r"not in the collection: line 3: zzz.png"),
        ("file,label\na/1.png,x,extra\n", r"labels.csv:2: more cells"),
    ],
)
def test_bad_csv_names_the_line(tmp_path, text, message):
    with pytest.raises(LabelsError, match=message):
        read_labels_csv(write(tmp_path, text), KNOWN)


def test_wrong_encoding_names_the_line(tmp_path):
    path = write(tmp_path, "file,label\na/1.png,caf\u00e9\n", encoding="latin-1")
    with pytest.raises(LabelsError, match=r"labels.csv:2: not UTF-8"):
        read_labels_csv(path, KNOWN)


def test_load_labels_dispatches(tmp_path):
    assert load_labels("folders", KNOWN).tasks == ["character"]
    path = write(tmp_path, "\ufefffile,label\nb/1.png,z\n")
    assert load_labels(str(path), KNOWN).column() == {"b/1.png": "z"}


def test_several_labels_per_picture_in_a_cell_or_on_several_rows(tmp_path):
    path = write(tmp_path, "file,character\na/1.png,y | x\na/2.png,x\na/2.png,z\nb/1.png,w\n")
    labels = read_labels_csv(path, KNOWN)
    assert labels.column() == {"a/1.png": "x|y", "a/2.png": "x|z", "b/1.png": "w"}
    assert label_set(labels.column()["a/2.png"]) == {"x", "z"}
