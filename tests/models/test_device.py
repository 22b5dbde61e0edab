import torch

from models.device import autocast, resolve_device, resolve_dtype


def test_auto_follows_cuda_availability(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda:1") and resolve_device("cpu").type == "cpu"


def test_precision_autocast_only_on_gpu(monkeypatch):
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_dtype("bf16", cpu) is None and resolve_dtype("auto", cpu) is None
    assert resolve_dtype("fp32", gpu) is None
    assert resolve_dtype("fp16", gpu) is torch.float16 and resolve_dtype("bf16", gpu) is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype("auto", gpu) is torch.float16
    with autocast(cpu, None):
        assert (torch.ones(2) @ torch.ones(2)).dtype == torch.float32
