"""A request's audio, in memory: the body read up to a size limit, a multipart upload's file part.

Nothing is written to disk: Starlette's form parser spools parts over 1 MB
to temporary files, so multipart bodies are parsed here, from the bytes
already read, with python-multipart's streaming parser.
"""

from __future__ import annotations

MB = 1024 * 1024


class RequestProblem(Exception):
    """A request the server refuses: an HTTP status and a one-line reason for the client."""

    def __init__(self, status, reason):
        self.status = status
        self.reason = reason
        super().__init__(reason)


async def read_body(request, max_bytes):
    """The request's body, refused with 413 as soon as it is known to exceed `max_bytes`.

    The Content-Length header is checked first; the stream is counted as it
    arrives all the same (a chunked body has no length, a header can lie).

    Args:
        request: starlette.requests.Request.
        max_bytes: int. The limit in bytes.

    Returns:
        bytes.

    Raises:
        RequestProblem: 413 over the limit, 400 for a malformed Content-Length.
    """
    limit = f"over the upload limit of {max_bytes / MB:g} MB (`msir serve --max-mb`)"
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared = int(declared)
        except ValueError:
            raise RequestProblem(400, f"Content-Length {declared!r} is not a number of bytes") from None
        if declared > max_bytes:
            raise RequestProblem(413, f"the body is {declared / MB:.1f} MB, {limit}")
    parts, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise RequestProblem(413, f"the body is more than {max_bytes / MB:g} MB, {limit}")
        parts.append(chunk)
    return b"".join(parts)


def audio_part(body, content_type):
    """(bytes, file name) of an upload: a raw body, or the `file` part of a multipart/form-data body.

    Args:
        body: bytes. The whole request body.
        content_type: str or None. The request's Content-Type header.

    Returns:
        (data, name): the audio's bytes and what messages call it (the
        part's filename, else "upload").

    Raises:
        RequestProblem: 400 for a multipart body without a `file` part, or
            one that does not parse.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

    kind, options = parse_options_header(content_type or "")
    if kind != b"multipart/form-data":
        return body, "upload"
    boundary = options.get(b"boundary")
    if not boundary:
        raise RequestProblem(400, "a multipart/form-data body without a boundary in its Content-Type")
    parts, state = [], {}

    def on_part_begin():
        state.update(headers={}, field=b"", value=b"", data=[])

    def on_header_field(data, start, end):
        state["field"] += data[start:end]

    def on_header_value(data, start, end):
        state["value"] += data[start:end]

    def on_header_end():
        state["headers"][state["field"].lower()] = state["value"]
        state.update(field=b"", value=b"")

    def on_part_data(data, start, end):
        state["data"].append(data[start:end])

    def on_part_end():
        _, disposition = parse_options_header(state["headers"].get(b"content-disposition", b""))
        parts.append((disposition.get(b"name", b"").decode("latin-1"),
                      disposition.get(b"filename", b"").decode("utf-8", "replace"), b"".join(state["data"])))

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field, "on_header_value": on_header_value,
        "on_header_end": on_header_end, "on_part_data": on_part_data, "on_part_end": on_part_end})
    try:
        parser.write(body)
        parser.finalize()
    except Exception as error:
        raise RequestProblem(400, f"the multipart/form-data body does not parse: {error}") from None
    for name, filename, data in parts:
        if name == "file":
            return data, filename or "upload"
    raise RequestProblem(400, "a multipart/form-data body needs the audio in a part named 'file' "
                              f"(found: {', '.join(repr(p[0]) for p in parts) or 'no parts'})")


# Decoding may hold at most this many times the recording's 16 kHz mono float32 size (48 kHz x 8
# channels, 96 kHz x 4 ...): a cap on what a small, highly compressed upload makes the server allocate.
DECODE_FACTOR = 24
UNSIZED = ("WAV", "WAVEX", "RF64", "W64")  # containers whose unstated length is bounded by the body (PCM)
BYTES = {"PCM_U8": 1, "PCM_S8": 1, "ULAW": 1, "ALAW": 1, "PCM_16": 2, "PCM_24": 3, "PCM_32": 4, "FLOAT": 4,
         "DOUBLE": 8}  # bytes per sample; others (ADPCM) are taken as half a byte


def declared_seconds(data, name, max_seconds, over):
    """Refuses an upload whose header declares audio over `max_seconds`, before anything is decoded.

    libsndfile reads the header only (`soundfile.info` on the bytes in
    memory): frames, rate, channels. A 110 KB FLAC of silence can declare
    hours; decoding it would allocate gigabytes before its length is known.

    Args:
        data: bytes. The upload.
        name: str. What messages call it.
        max_seconds: float. The longest recording taken.
        over: callable(seconds) -> str. The 413's one line for `seconds` over the limit.

    Returns:
        The declared seconds (for a wav whose header leaves its length open,
        an upper bound from the body's size); None for bytes libsndfile
        cannot open (`read_audio` then refuses them, decoding nothing).

    Raises:
        RequestProblem: 413 over the limit, or over the decoding budget (too
            many channels or too high a rate for its length), or a length
            the header does not state in a compressed format.
    """
    import io

    import soundfile

    try:
        info = soundfile.info(io.BytesIO(data))
    except Exception:
        return None  # libsndfile cannot open it: read_audio refuses it with the CLI's reason, decoding nothing
    frames = info.frames if 0 < info.frames < 2**62 else None
    if frames is None:
        if info.format not in UNSIZED or info.samplerate <= 0:
            raise RequestProblem(413, f"{name}: its header does not say how long the audio is ({info.format}); "
                                      "re-encode it as wav or flac")
        frames = int(len(data) / BYTES.get(info.subtype, 0.5) / max(info.channels, 1))  # uncompressed: a bound
    seconds = frames / info.samplerate
    if seconds > max_seconds:
        raise RequestProblem(413, over(seconds))
    if frames * info.channels > DECODE_FACTOR * 16000 * max(seconds, 1.0):
        raise RequestProblem(413, f"{name}: {info.channels} channels at {info.samplerate} Hz: more samples to "
                                  f"decode than the server takes ({DECODE_FACTOR} x 16 kHz mono); downmix "
                                  "or resample it first")
    return seconds
