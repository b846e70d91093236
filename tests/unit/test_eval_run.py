"""run_eval: the whole of `reclmis eval` as one core call (artefact, data, scores, the as-is baseline)."""

from __future__ import annotations

import pytest

from reclmis_core.data.prepare import PrepareOptions, prepare_dataset
from reclmis_core.engine.eval_run import run_eval
from reclmis_core.errors import ConfigError

from .test_preprocess import _folder_source, _png_gray
from .test_preprocessor import _cfg, _checkpoint


def test_run_eval_scores_compares_and_writes_rows(tmp_path):
    src = _folder_source(tmp_path, "g.png", _png_gray)
    prepare_dataset(src, tmp_path / "data", PrepareOptions(workers=1))
    cfg = _cfg(1)
    ckpt = _checkpoint(tmp_path, cfg, {"image_size": 32, "in_channels": 1, "mean": cfg.data.mean,
                                       "std": cfg.data.std})
    run = run_eval(ckpt, tmp_path / "data", "train", "empty", device="cpu")
    doc = run.to_dict()
    assert doc["text"] == "empty" and doc["n_images"] == 1 and "dice_drop" in doc
    assert run.baseline is not None and run.baseline.text == "as-is"
    assert run.per_image_csv().splitlines()[0] == "id,note,dice,iou,fg_pred,fg_true,original_note"


@pytest.mark.parametrize("kwargs,needle", [({"threshold": 1.5}, "infer.threshold"), ({"split": "dev"}, "split"),
                                           ({"text_mode": "mixed"}, "text must be")])
def test_run_eval_names_the_setting(tmp_path, kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        run_eval(tmp_path / "none", tmp_path, **kwargs)
