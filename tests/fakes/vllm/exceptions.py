"""vLLM's error classes (`vllm.exceptions`): client errors are 4xx, server errors 5xx."""


class VLLMError(Exception):
    pass


class VLLMClientError(VLLMError):
    pass


class VLLMServerError(VLLMError):
    pass


class VLLMValidationError(VLLMClientError):
    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class GracefulHTTPError(VLLMError):
    pass
