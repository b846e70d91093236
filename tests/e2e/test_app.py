"""`reclmis app` through its API (gradio_client), as a browser's page would call it (issue 23): PNG, DICOM series and
NIfTI uploads, messages instead of stack traces, one request at a time under 20 concurrent ones."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("gradio", reason="gradio not installed (pip install 'reclmis[app]')")
pytest.importorskip("gradio_client", reason="gradio_client not installed (the test extra)")

import reclmis_core  # noqa: E402

from tests.dicom_series import write_ct_series  # noqa: E402

NOTE = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."
CORPUS = [NOTE, "Unilateral pulmonary infection, one infected area, middle right lung."]


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    """The session's tiny random checkpoint (tests/conftest.py): the page's plumbing needs no trained model."""
    return tiny_checkpoint


@pytest.fixture(scope="module")
def server(ckpt, tmp_path_factory):
    from reclmis_core.app import serve

    model = reclmis_core.load(ckpt, device="cpu", explain=True)
    active, peak = [0], [0]
    lock = threading.Lock()
    predict = model.predict

    def counted(*args, **kwargs):  # records how many predictions ever ran at once
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.02)  # widen the window in which a second request could overlap
            return predict(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    model.predict = counted
    demo, session, url = serve(model, "127.0.0.1", _free_port(), work_dir=tmp_path_factory.mktemp("app_work"))
    yield url, session, peak
    demo.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


def _segment(client, files: list[Path], note: str, threshold: float = 0.5):
    from gradio_client import handle_file

    return client.predict([handle_file(str(f)) for f in files], note, threshold, api_name="/segment")


def test_served_on_localhost_with_two_endpoints(server, client):
    assert server[0].startswith("http://127.0.0.1:")
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/segment", "/slice"}


def test_png_upload_gives_overlay_w_poi_areas_and_a_png_mask(client, tmp_path):
    img = tmp_path / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 80), dtype=np.uint8)).save(img)
    overlay, heat, summary, mask, slider = _segment(client, [img], NOTE)
    assert Path(overlay).is_file() and Path(heat).is_file()
    assert "Lesion area:" in summary and "Lesions (connected regions):" in summary
    assert "The model read the note as:** upper left and lower right lung" in summary  # tiny reads the zones
    assert Path(mask).name == "xray_mask.png" and Image.open(mask).size == (80, 60)  # the input's own size
    assert slider["visible"] is False


def test_dicom_series_files_become_one_series_and_a_seg(client, tmp_path):
    import pydicom

    write_ct_series(tmp_path / "ct", 3)
    overlay, heat, summary, mask, slider = _segment(client, sorted((tmp_path / "ct").iterdir()), NOTE)
    seg = pydicom.dcmread(mask)
    assert seg.Modality == "SEG" and int(seg.NumberOfFrames) == 3
    assert slider["visible"] is True and slider["maximum"] == 2 and "Slices with lesion:" in summary


def test_nifti_upload_gives_a_nifti_mask_and_the_slice_slider_works(server, client, tmp_path):
    import nibabel as nib

    vol = np.random.default_rng(2).integers(-1000, 400, (40, 30, 4)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([-0.8, -0.8, 3.0, 1.0])), tmp_path / "case.nii.gz")
    *_, mask, slider = _segment(client, [tmp_path / "case.nii.gz"], NOTE)
    assert Path(mask).name == "case_mask.nii.gz" and nib.load(mask).shape == (40, 30, 4)
    session = server[1]
    token = next(reversed(session.results))
    view = session.view(token, 3)
    assert view.ok and view.slice_index == 3 and view.overlay is not None and view.w_poi is not None


def test_bad_uploads_and_empty_notes_are_messages(client, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    overlay, heat, summary, mask, _ = _segment(client, [bad], NOTE)
    assert overlay is None and mask is None
    assert summary.startswith("**Cannot segment this upload.**") and "broken.png" in summary
    assert "Traceback" not in summary and str(tmp_path) not in summary
    good = tmp_path / "ok.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(good)
    overlay, _, summary, mask, _ = _segment(client, [good], "   ")
    assert overlay is None and "note is empty" in summary
    _, _, summary, _, _ = _segment(client, [good, bad], NOTE)
    assert "one DICOM series" in summary


def test_twenty_concurrent_requests_are_all_answered_one_at_a_time(server, client, tmp_path):
    from gradio_client import handle_file

    img = tmp_path / "load.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64), dtype=np.uint8)).save(img)
    session, peak = server[1], server[2]
    before = session.requests
    jobs = [client.submit([handle_file(str(img))], CORPUS[i % 2], 0.5, api_name="/segment") for i in range(20)]
    answers = [job.result(timeout=120) for job in jobs]
    assert all("Lesion area:" in a[2] for a in answers)
    assert session.requests - before == 20 and peak[0] == 1  # never two predictions at once
    assert len(session.results) <= session.keep  # old results and their files are dropped
    kept = {p.name for p in session.work_dir.iterdir()}
    assert kept == set(session.results)


def test_the_cli_serves_the_page(ckpt, monkeypatch):
    """`reclmis app -c CKPT --port N` loads the model once and serves until stopped."""
    from typer.testing import CliRunner

    import reclmis_core.app.page as page
    from reclmis_cli.main import app

    served = {}

    def fake_serve(model, host, port, **kwargs):
        served.update(model=model, host=host, port=port)

        class Blocks:
            def block_thread(self) -> None:
                served["blocked"] = True

            def close(self) -> None:
                served["closed"] = True

        return Blocks(), None, f"http://{host}:{port}/"

    monkeypatch.setattr(page, "serve", fake_serve)
    monkeypatch.setattr("reclmis_core.app.serve", fake_serve)
    res = CliRunner().invoke(app, ["app", "-c", str(ckpt), "--port", "7999", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert served["host"] == "127.0.0.1" and served["port"] == 7999 and served["model"].explain
    assert served["blocked"] and served["closed"] and "http://127.0.0.1:7999/" in res.output
