"""The six documented pod templates: image, start command and ports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEFAULT_TEMPLATE = "ubuntu-24-04"


@dataclass(frozen=True)
class Template:
    id: str
    name: str
    description: str
    image: str
    start_command: str | None
    ports: tuple[int, ...]


TEMPLATES: tuple[Template, ...] = (
    Template("ubuntu-24-04", "Ubuntu 24.04", "Ubuntu 24.04 with CUDA drivers only",
             "nvidia/cuda:12.8.1-base-ubuntu24.04", None, (22,)),
    Template("pytorch", "PyTorch", "Ubuntu, CUDA, PyTorch 2.x, transformers and accelerate",
             "pytorch/pytorch:2.7.1-cuda12.8-cudnn9-runtime",
             "pip install --quiet transformers accelerate", (22,)),
    Template("vllm", "vLLM", "vLLM OpenAI-compatible inference server (pass --model org/name)",
             "vllm/vllm-openai:latest", None, (22, 8000)),
    Template("ollama", "Ollama", "Ollama daemon on port 11434", "ollama/ollama:latest", "ollama serve", (22, 11434)),
    Template("a1111", "Stable Diffusion WebUI", "AUTOMATIC1111 Stable Diffusion WebUI on port 7860",
             "universonic/stable-diffusion-webui:latest", None, (22, 7860)),
    Template("text-gen-webui", "text-generation-webui", "oobabooga text-generation-webui on port 7860",
             "atinoda/text-generation-webui:default-nvidia", None, (22, 7860)),
)
_BY_ID = {t.id: t for t in TEMPLATES}


def get_template(template_id: str) -> Template | None:
    return _BY_ID.get(template_id)


def public(t: Template) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "description": t.description, "image": t.image, "ports": list(t.ports),
            "default": t.id == DEFAULT_TEMPLATE}
