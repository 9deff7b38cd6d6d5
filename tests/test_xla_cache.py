"""The persistent XLA cache hook: it sets TF_XLA_FLAGS once, respects an existing setting and the opt-out."""
from tf_facetex import xla_cache


def test_enable_sets_the_flag_once_and_respects_opt_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_XLA_FLAGS", "--tf_xla_auto_jit=0")
    monkeypatch.delenv("TF_FACETEX_XLA_CACHE", raising=False)
    used = xla_cache.enable_persistent_xla_cache(tmp_path / "xla")
    assert used == str(tmp_path / "xla") and (tmp_path / "xla").is_dir()
    import os
    assert os.environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=0 {xla_cache.FLAG}={tmp_path / 'xla'}"
    assert xla_cache.enable_persistent_xla_cache(tmp_path / "other") == str(tmp_path / "xla")   # first one wins
    assert os.environ["TF_XLA_FLAGS"].count(xla_cache.FLAG) == 1
    monkeypatch.setenv("TF_XLA_FLAGS", "")
    monkeypatch.setenv("TF_FACETEX_XLA_CACHE", "0")
    assert xla_cache.enable_persistent_xla_cache(tmp_path / "xla") == ""
    assert os.environ["TF_XLA_FLAGS"] == ""
