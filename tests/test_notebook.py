"""launch/colab_demo.ipynb runs end to end on CPU (its Colab install cell skipped), for a few training steps."""

import nbclient
import nbformat

from tests.conftest import REPO


def test_colab_demo_runs_end_to_end(tmp_path, monkeypatch):
  notebook = nbformat.read(REPO / "launch" / "colab_demo.ipynb", as_version=4)
  notebook.cells = [c for c in notebook.cells if "colab-install" not in c.metadata.get("tags", [])]
  workdir = tmp_path / "run"
  monkeypatch.setenv("DEMO_WORKDIR", str(workdir))
  monkeypatch.setenv("DEMO_NUM_STEPS", "20")
  monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "2")
  nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                          resources={"metadata": {"path": str(REPO)}}).execute()
  text = "".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", []))
  assert "step 20: zero-shot shape top-1" in text
  assert "zero_shot_shape" in text and "linear_probe_shape" in text
  images = sum(1 for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if "image/png" in o.get("data", {}))
  assert images == 3  # Loss curves, confusion matrix, example images.
  assert (workdir / "confusion_matrix.png").stat().st_size > 1000
