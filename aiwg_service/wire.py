"""What both ends of the socket agree on, in the standard library only: framing limits and error codes.

The client (``aiwg_service.client``) imports just this, so ``aiwgctl ping`` never pays for msgspec;
``protocol`` re-exports all of it beside the typed params and results the service decodes.
"""

from __future__ import annotations

# typing and collections.abc cost milliseconds at import: this module is on aiwgctl's fast path
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


JSONRPC = "2.0"
MAX_LINE = 1024 * 1024  # a request line over 1 MiB is refused and the connection closed

# JSON-RPC 2.0 error codes, and the service's own in the server range
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
#: refused because the service is stopping (read-only methods are still served)
SERVER_BUSY = -32000
CONFIG_INVALID = -32001
ALREADY_DECIDED = -32004  # an approval was decided before this request (data.approval says by whom)
NOT_ALLOWED = -32005  # the caller is not one of an approval's approvers
NOT_FOUND = INVALID_PARAMS  # the AIWG daemon answers an unknown task id with -32602; clients rely on it


class RpcError(Exception):
    """Raised by handlers (and the client) to produce or report a JSON-RPC error object."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    @classmethod
    def from_object(cls, err: dict[str, Any]) -> RpcError:
        """The error object of a reply, as the exception a client raises."""
        return cls(err.get("code", INTERNAL_ERROR), err.get("message", "error"), err.get("data"))
