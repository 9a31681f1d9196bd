"""``OpenAIRefiner``: prompt refinement by any OpenAI-compatible ``/v1/chat/completions`` endpoint.

OpenAI, vLLM, llama.cpp, Ollama... all speak this protocol; the standard library's urllib is
enough, so this backend needs no package at all.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from typing import Any

from .chat import ChatRefiner, GenerationError

__all__ = ["OpenAIRefiner", "ENV_BASE", "ENV_KEY", "ENV_MODEL", "env_setting"]


ENV_BASE = ("DYNAVATAR_LLM_BASE_URL", "OPENAI_BASE_URL")
ENV_KEY = ("DYNAVATAR_LLM_API_KEY", "OPENAI_API_KEY")
ENV_MODEL = ("DYNAVATAR_LLM_MODEL",)
_OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
_OPENAI_DEFAULT_MODEL = "gpt-4o-mini"


def env_setting(names: tuple[str, ...]) -> str | None:
    for n in names:
        if os.environ.get(n):
            return os.environ[n]
    return None


def _chat_url(base: str) -> str:
    """Accept '.../v1/chat/completions', '.../v1' or a bare host."""
    base = base.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if re.search(r"/v\d+$", base):
        return base + "/chat/completions"
    return base + "/v1/chat/completions"


class OpenAIRefiner(ChatRefiner):
    """Any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama...), via urllib.

    Settings come from the arguments, else ``DYNAVATAR_LLM_BASE_URL`` / ``OPENAI_BASE_URL``,
    ``DYNAVATAR_LLM_MODEL`` and ``DYNAVATAR_LLM_API_KEY`` / ``OPENAI_API_KEY`` (base URL default:
    OpenAI's; model default: gpt-4o-mini). Network errors fall back to the rules with a warning;
    ``strict=True`` raises instead (and also when the reply stays invalid after the repair).
    """

    def __init__(self, base_url: str | None = None, model: str | None = None, api_key: str | None = None,
                 timeout: float = 30, strict: bool = False, max_tokens: int = 400):
        self.base_url = base_url or env_setting(ENV_BASE) or _OPENAI_DEFAULT_BASE
        self.url = _chat_url(self.base_url)
        self.model = model or env_setting(ENV_MODEL) or _OPENAI_DEFAULT_MODEL
        self._api_key = api_key if api_key is not None else env_setting(ENV_KEY)
        self.timeout = timeout
        self.strict = strict
        self.max_tokens = int(max_tokens)
        self.name = f"openai:{self.model}"

    def __repr__(self) -> str:  # never show the key
        return f"OpenAIRefiner(url={self.url!r}, model={self.model!r}, strict={self.strict})"

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        req = urllib.request.Request(self.url, data=json.dumps(body).encode("utf-8"), headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))

    def _post_checked(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST, retrying once without ``response_format`` for servers that reject it."""
        try:
            try:
                return self._post(body)
            except urllib.error.HTTPError as e:
                detail = e.read().decode("utf-8", "replace")[:300]
                if e.code in (400, 422) and "response_format" in detail and "response_format" in body:
                    return self._post({k: v for k, v in body.items() if k != "response_format"})
                raise GenerationError(f"{self.url} answered HTTP {e.code}: {detail}") from None
        except GenerationError:
            raise
        except urllib.error.HTTPError as e:
            raise GenerationError(f"{self.url} answered HTTP {e.code}: {e.reason}") from None
        except (urllib.error.URLError, TimeoutError, OSError) as e:
            raise GenerationError(f"cannot reach {self.url}: {getattr(e, 'reason', e)}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise GenerationError(f"{self.url} did not answer with JSON: {e}") from None

    def generate_text(self, messages: list[dict[str, str]]) -> str:
        body = {"model": self.model, "messages": messages, "temperature": 0, "max_tokens": self.max_tokens,
                "response_format": {"type": "json_object"}}
        data = self._post_checked(body)
        try:
            content = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise GenerationError(f"{self.url} returned no chat completion: {str(data)[:200]}") from None
        if not isinstance(content, str):
            raise GenerationError(f"{self.url} returned a non-text message: {str(content)[:200]}")
        return content
