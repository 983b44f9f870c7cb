"""The client's error tree: every status and every transport failure maps to one class."""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import httpx
import pytest

from quantcrew.tools import errors
from quantcrew.tools.errors import (
    ArtifactConflict,
    CircuitOpenError,
    InvalidModelInput,
    MLClientError,
    MLRequestRejected,
    MLResponseError,
    MLServerFault,
    MLServerTimeout,
    MLServerUnavailable,
    ModelNotFound,
    ModelNotReady,
    PayloadTooLarge,
    Unauthorized,
    error_class_for_status,
    error_from_response,
    is_server_fault,
    map_transport_errors,
)

_REQUEST = httpx.Request("POST", "http://ml.test/v1/regime/label")

_TREE: set[type[MLClientError]] = {
    cls
    for cls in vars(errors).values()
    if inspect.isclass(cls) and issubclass(cls, MLClientError)
}


def _error_response(status: int, **kwargs: object) -> httpx.Response:
    return httpx.Response(status, request=_REQUEST, **kwargs)  # type: ignore[arg-type]


def _body(code: str, message: str, details: object = None) -> dict[str, object]:
    return {"error": {"code": code, "message": message, "details": details}}


def _all_subclasses(cls: type[httpx.TransportError]) -> Iterator[type[httpx.TransportError]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_error_from_response_every_status_400_to_599_maps_to_one_tree_class() -> None:
    for status in range(400, 600):
        exc = error_from_response(_error_response(status, json=_body("some_code", "m")))
        assert type(exc) is error_class_for_status(status)
        assert type(exc) in _TREE
        assert exc.status_code == status
        if status < 500:
            assert isinstance(exc, MLRequestRejected), status
            assert not is_server_fault(exc), status
            assert not exc.retryable, status
        else:
            assert isinstance(exc, ModelNotReady | MLServerFault), status
            assert not isinstance(exc, MLRequestRejected), status
            assert is_server_fault(exc), status


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, MLRequestRejected),
        (401, Unauthorized),
        (403, Unauthorized),
        (404, ModelNotFound),
        (409, ArtifactConflict),
        (413, PayloadTooLarge),
        (418, MLRequestRejected),
        (422, InvalidModelInput),
        (429, MLRequestRejected),
        (500, MLServerFault),
        (502, MLServerFault),
        (503, ModelNotReady),
        (504, MLServerFault),
    ],
)
def test_error_class_for_status_named_statuses(status: int, cls: type[MLResponseError]) -> None:
    assert error_class_for_status(status) is cls


def test_error_class_for_status_outside_4xx_5xx_is_server_fault() -> None:
    assert error_class_for_status(302) is MLServerFault
    assert error_class_for_status(600) is MLServerFault


def test_payload_too_large_is_caught_as_invalid_input() -> None:
    exc = error_from_response(_error_response(413, json=_body("payload_too_large", "body over 16 MiB")))
    assert isinstance(exc, InvalidModelInput)
    assert isinstance(exc, MLRequestRejected)
    assert exc.code == "payload_too_large"


def test_error_from_response_reads_code_message_details_and_headers() -> None:
    details = [{"loc": ["data", "close", 3], "msg": "Input should be a finite number", "type": "finite_number"}]
    response = _error_response(
        422,
        json=_body("invalid_input", "data.close.3: Input should be a finite number", details),
        headers={"x-request-id": "req-42"},
    )
    exc = error_from_response(response)
    assert isinstance(exc, InvalidModelInput)
    assert exc.status_code == 422
    assert exc.code == "invalid_input"
    assert exc.message == "data.close.3: Input should be a finite number"
    assert exc.details == details
    assert exc.request_id == "req-42"
    assert exc.endpoint == "POST /v1/regime/label"
    assert str(exc) == "POST /v1/regime/label -> 422 invalid_input: data.close.3: Input should be a finite number"


def test_error_from_response_server_codes_map_to_mirrored_classes() -> None:
    # The server's domain errors (quantcrew.ml_server.errors) and the client class for each.
    from quantcrew.ml_server import errors as server_errors

    pairs = {
        server_errors.InvalidInputError: InvalidModelInput,
        server_errors.PayloadTooLargeError: PayloadTooLarge,
        server_errors.AuthError: Unauthorized,
        server_errors.ModelNotFoundError: ModelNotFound,
        server_errors.ArtifactIntegrityError: ArtifactConflict,
        server_errors.ModelNotReadyError: ModelNotReady,
        server_errors.MLServerError: MLServerFault,
    }
    for server_cls, client_cls in pairs.items():
        response = _error_response(server_cls.status_code, json=_body(server_cls.code, "m"))
        exc = error_from_response(response)
        assert type(exc) is client_cls
        assert exc.code == server_cls.code


def test_error_from_response_non_json_body_keeps_text_snippet() -> None:
    exc = error_from_response(_error_response(502, content=b"<html><body>Bad gateway from nginx</body></html>"))
    assert type(exc) is MLServerFault
    assert exc.code == "http_502"
    assert "Bad gateway from nginx" in exc.message
    assert exc.details is None


def test_error_from_response_non_utf8_body_is_tolerated() -> None:
    exc = error_from_response(_error_response(500, content=b"\xff\xfe\x00garbage"))
    assert type(exc) is MLServerFault
    assert exc.code == "http_500"


def test_error_from_response_long_body_is_truncated() -> None:
    exc = error_from_response(_error_response(500, content=b"x" * 10_000))
    assert len(exc.message) <= 200
    assert exc.message.endswith("...")


def test_error_from_response_empty_body_uses_reason_phrase() -> None:
    exc = error_from_response(_error_response(404))
    assert type(exc) is ModelNotFound
    assert exc.code == "http_404"
    assert exc.message == "Not Found"


def test_error_from_response_fastapi_detail_shape() -> None:
    exc = error_from_response(_error_response(405, json={"detail": "Method Not Allowed"}))
    assert type(exc) is MLRequestRejected
    assert exc.code == "http_405"
    assert exc.message == "Method Not Allowed"


@pytest.mark.parametrize(
    "payload",
    [
        {"error": "just a string"},
        {"error": {"message": "no code"}},
        [1, 2, 3],
        "a bare string",
        {"something": "else"},
    ],
)
def test_error_from_response_malformed_error_body_falls_back(payload: object) -> None:
    exc = error_from_response(_error_response(500, json=payload))
    assert type(exc) is MLServerFault
    assert exc.code == "http_500"
    assert exc.message == "Internal Server Error"
    assert exc.details == payload


def test_error_from_response_without_request_has_no_endpoint() -> None:
    exc = error_from_response(httpx.Response(503, json=_body("not_ready", "loading")))
    assert exc.endpoint is None
    assert str(exc) == "503 not_ready: loading"


@pytest.mark.parametrize(("header", "expected"), [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None)])
def test_error_from_response_reads_retry_after_seconds(header: str, expected: float | None) -> None:
    exc = error_from_response(_error_response(503, json=_body("not_ready", "m"), headers={"retry-after": header}))
    assert exc.retry_after_s == expected


def test_error_from_response_reads_retry_after_http_date_in_past_as_zero() -> None:
    headers = {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    exc = error_from_response(_error_response(503, json=_body("not_ready", "m"), headers=headers))
    assert exc.retry_after_s == 0.0


def test_map_transport_errors_every_transport_error_maps_with_cause() -> None:
    classes: list[type[httpx.TransportError]] = [httpx.TransportError, *_all_subclasses(httpx.TransportError)]
    assert len(classes) >= 15  # the walk really found httpx's tree
    for cls in classes:
        original = cls("boom", request=_REQUEST)
        with pytest.raises(MLClientError) as info, map_transport_errors():
            raise original
        exc = info.value
        expected = MLServerTimeout if issubclass(cls, httpx.TimeoutException) else MLServerUnavailable
        assert type(exc) is expected, cls
        assert exc.__cause__ is original
        assert is_server_fault(exc)
        assert exc.retryable
        assert cls.__name__ in str(exc)
        assert "http://ml.test/v1/regime/label" in str(exc)


def test_map_transport_errors_without_request_still_maps() -> None:
    with pytest.raises(MLServerUnavailable) as info, map_transport_errors():
        raise httpx.ConnectError("refused")
    assert "ConnectError: refused" in str(info.value)


@pytest.mark.parametrize("exc", [ValueError("bad"), httpx.DecodingError("x"), httpx.TooManyRedirects("x")])
def test_map_transport_errors_other_exceptions_pass_through(exc: Exception) -> None:
    with pytest.raises(type(exc)) as info, map_transport_errors():
        raise exc
    assert info.value is exc


def test_map_transport_errors_no_error_is_silent() -> None:
    with map_transport_errors():
        value = 1
    assert value == 1


def test_is_server_fault_by_class() -> None:
    def response_error(cls: type[MLResponseError], status: int) -> MLResponseError:
        return cls("m", status_code=status, code="c")

    assert is_server_fault(MLServerUnavailable("x"))
    assert is_server_fault(CircuitOpenError("x", retry_in_s=1.0, failures=3))
    assert is_server_fault(MLServerTimeout("x"))
    assert is_server_fault(response_error(ModelNotReady, 503))
    assert is_server_fault(response_error(MLServerFault, 500))
    assert is_server_fault(httpx.ReadError("raw"))
    assert not is_server_fault(response_error(InvalidModelInput, 422))
    assert not is_server_fault(response_error(ModelNotFound, 404))
    assert not is_server_fault(response_error(MLRequestRejected, 400))
    assert not is_server_fault(ValueError("x"))


def test_circuit_open_error_is_unavailable_but_not_retryable() -> None:
    exc = CircuitOpenError("open", retry_in_s=12.5, failures=3)
    assert isinstance(exc, MLServerUnavailable)
    assert not exc.retryable
    assert exc.retry_in_s == 12.5
    assert exc.failures == 3


def test_module_docstring_draws_every_class_of_the_tree() -> None:
    doc = errors.__doc__ or ""
    for cls in _TREE:
        assert cls.__name__ in doc, cls
    assert {cls.__name__ for cls in _TREE} <= set(errors.__all__)
