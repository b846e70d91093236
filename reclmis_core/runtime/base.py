"""The runtime interface: encode notes, segment preprocessed images (see the package docstring)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..data.preprocessor import Preprocessor
from ..data.transforms import flip_note_laterality


class Runtime:
    """Encode notes and segment preprocessed images; what every caller that runs a model talks to.

    Attributes set by the implementations:
        name: ``torch`` or ``onnx``; ``description``: one line for reports.
        preprocessor: the preprocessing the model was trained with (a ``Preprocessor``: ``reclmis`` or
            ``reference``, the public code's); what turns a file into this runtime's input.
        threshold: the checkpoint's (or export's) ``infer.threshold``.
        uses_text: the model is text-guided; ``note_optional``: it was also trained without notes.
        tokenizer, max_length: the note tokenizer and its length (None / 0 for image-only models).
        device: where ``segment``'s inputs go (CPU for ONNX Runtime, whose provider picks the device).
        model_cfg: the model config (sizes the thread default) or None (an export carries none).
        cfg: the checkpoint's run config, or None (an export carries none).
        explain: :meth:`segment` also returns W_poi / W_woi.
        mirror: :meth:`forward` averages with the left-right mirrored pass (the checkpoint's or export's
            ``infer.mirror``; ``open_runtime(mirror=...)`` overrides it).
    """

    name = "runtime"
    description = ""
    preprocessor: Preprocessor
    threshold = 0.5
    uses_text = False
    note_optional = False
    tokenizer: Any = None
    max_length = 0
    device = torch.device("cpu")
    model_cfg: Any = None
    cfg: Any = None  # the checkpoint's RunConfig (TorchRuntime); None for an export, which carries none
    explain = False
    mirror = False  # infer.mirror: segment() results are averaged with the mirrored pass by :meth:`forward`
    precision = "fp32"  # fp32 | bf16 | fp16 (torch autocast) | int8 (an int8 ONNX export)

    def tokenize(self, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Notes -> (input_ids, attention_mask), int64 (N, L)."""
        raise NotImplementedError

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids + mask (N, L) -> text features float32 (N, L, D)."""
        raise NotImplementedError

    def encode(self, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Notes -> (text features float32 (N, L, D), mask (N, L))."""
        ids, mask = self.tokenize(notes)
        return self.encode_ids(ids, mask), mask

    def segment(self, images: torch.Tensor, feats: torch.Tensor | None = None, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Preprocessed images (B, C, S, S) float32 (+ note features/mask) -> logits float32 (B, 1, S, S)."""
        raise NotImplementedError

    def segment_explain(self, images: torch.Tensor, feats: torch.Tensor | None, mask: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(logits, W_poi, W_woi); only runtimes built with ``explain=True`` have the interest weights."""
        return self.segment(images, feats, mask), None, None

    def forward(self, images: torch.Tensor, notes: list[str],
                encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]] | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """What eval and predict run: preprocessed images and their notes -> (logits, W_poi, W_woi, note mask).

        ``encode`` (default :meth:`encode`) turns notes into features (predict passes its note cache). With
        :attr:`mirror`, the image mirrored left-right is segmented with the note's sides swapped (``left`` <->
        ``right``, ``Lt`` <-> ``Rt``, ``RUL`` <-> ``LUL``), mirrored back, and the two probabilities averaged
        (returned as logits); W_poi / W_woi are the unmirrored pass's.
        """
        encode = encode or self.encode
        feats, mask = encode(notes) if self.uses_text else (None, None)
        if self.explain:
            logits, w_poi, w_woi = self.segment_explain(images, feats, mask)
        else:
            logits, w_poi, w_woi = self.segment(images, feats, mask), None, None
        if self.mirror:
            m_feats, m_mask = encode([flip_note_laterality(n) for n in notes]) if self.uses_text else (None, None)
            mirrored = self.segment(torch.flip(images, [-1]), m_feats, m_mask).flip(-1)
            prob = (torch.sigmoid(logits.float()) + torch.sigmoid(mirrored.float())) / 2
            logits = torch.logit(prob, eps=1e-7)
        return logits, w_poi, w_woi, mask
