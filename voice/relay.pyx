# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A call's audio path, compiled: Twilio's media messages to the voice agent's binary frames and back.

picows calls these listeners from C for every websocket frame. An audio frame is relayed right
there, in C: no Python call, no JSON objects, no bytes objects, one reused buffer per direction.
Everything else (start, DTMF, marks, stop, the agent's events, closes) reaches the call's Python
side (voice/bridge.py, CallBridge subclasses MediaRelay) as before.

Twilio's media messages are recognised by a strict reader of one JSON shape only (an object of
strings and objects of strings, ASCII, no escapes), with a strict base64 decoder. Anything it does
not fully recognise is handed, as bytes, to CallBridge.twilio_message, which parses it with a
JSON parser and decides (relay, event, or malformed): so the fast path accepts a subset of what
the general path accepts, with the same result (tests/voice/test_relay.py).
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.string cimport memcmp, memcpy
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from picows.picows cimport WSFrame, WSListener, WSMsgType, WSTransport

import picows

# The picows whose C structures this module was compiled against (pyproject.toml's build
# requirements pin the same): another picows at run time needs a rebuild (`pip install -e .`).
PICOWS_BUILT_AGAINST = "2.3.1"
if picows.__version__ != PICOWS_BUILT_AGAINST:
    raise ImportError(f"voice.relay was built against picows {PICOWS_BUILT_AGAINST}, not {picows.__version__}: "
                      "rebuild it with `pip install -e .`")

# The bridge's added latency per frame, counted in C into these buckets (seconds; the last is +Inf);
# core/metrics.py (FRAME_BUCKETS_S) exports them as one histogram and names the same bounds.
DEF LATENCY_BUCKETS = 12
cdef double[11] LATENCY_BOUNDS = [0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                  0.005, 0.01]
LATENCY_BOUNDS_S = tuple(LATENCY_BOUNDS[i] for i in range(LATENCY_BUCKETS - 1))

cdef Py_ssize_t HEADROOM = 14  # picows writes the websocket header in front of the message, in place
cdef const char* MEDIA_SUFFIX = b'"}}'

cdef signed char[256] B64_VALUE
cdef const char* B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


cdef void _init_tables() noexcept:
    cdef int i
    for i in range(256):
        B64_VALUE[i] = -1
    for i in range(64):
        B64_VALUE[<unsigned char>B64_ALPHABET[i]] = i


_init_tables()


cdef inline double _monotonic() noexcept nogil:
    """time.monotonic(), without the call."""
    cdef timespec now
    clock_gettime(CLOCK_MONOTONIC, &now)
    return now.tv_sec + now.tv_nsec * 1e-9


# ---- the media message reader ----------------------------------------------------------------


cdef struct Span:
    const char* ptr
    Py_ssize_t size


cdef struct Reader:
    const char* p
    const char* end
    Span event
    Span payload


cdef inline void _skip_space(Reader* r) noexcept nogil:
    while r.p < r.end and (r.p[0] == b' ' or r.p[0] == b'\t' or r.p[0] == b'\n' or r.p[0] == b'\r'):
        r.p += 1


cdef inline bint _string(Reader* r, Span* out) noexcept nogil:
    """A JSON string of printable ASCII without escapes; anything else is left to the JSON parser."""
    cdef const char* start
    cdef unsigned char c
    if r.p >= r.end or r.p[0] != b'"':
        return False
    r.p += 1
    start = r.p
    while r.p < r.end:
        c = <unsigned char>r.p[0]
        if c == b'"':
            out.ptr = start
            out.size = r.p - start
            r.p += 1
            return True
        if c == b'\\' or c < 0x20 or c >= 0x80:
            return False
        r.p += 1
    return False


cdef inline bint _is(Span s, const char* word, Py_ssize_t size) noexcept nogil:
    return s.size == size and memcmp(s.ptr, word, size) == 0


cdef inline bint _take(Reader* r, char c) noexcept nogil:
    """Skips white space, then `c` if it comes next."""
    _skip_space(r)
    if r.p < r.end and r.p[0] == c:
        r.p += 1
        return True
    return False


cdef inline bint _next_is(Reader* r, char c) noexcept nogil:
    _skip_space(r)
    return r.p < r.end and r.p[0] == c


cdef bint _object(Reader* r, int depth, bint in_media) noexcept nogil:
    """{"key": "string" | {...}, ...}: two levels at most; records `event` and `media.payload`."""
    cdef Span key, value
    if not _take(r, b'{'):
        return False
    if _take(r, b'}'):
        return True
    while True:
        if not _next_is(r, b'"') or not _string(r, &key) or not _take(r, b':'):
            return False
        if _next_is(r, b'"'):
            if not _string(r, &value):
                return False
            if depth == 0 and _is(key, b"event", 5):
                r.event = value  # duplicate keys: the last one counts, as in JSON parsers
            elif in_media and _is(key, b"payload", 7):
                r.payload = value
            elif depth == 0 and _is(key, b"media", 5):
                r.payload.ptr = NULL  # "media" is not an object: no payload
        elif _next_is(r, b'{') and depth == 0:
            if _is(key, b"media", 5):
                r.payload.ptr = NULL  # a later "media" replaces an earlier one
                if not _object(r, 1, True):
                    return False
            elif not _object(r, 1, False):
                return False
        else:
            return False  # numbers, arrays, null, deeper objects: the JSON parser's job
        if _take(r, b'}'):
            return True
        if not _take(r, b','):
            return False


cdef bint _media_payload(const char* data, Py_ssize_t size, Span* payload) noexcept nogil:
    """True, with the base64 payload, for a well-formed media message with one."""
    cdef Reader r
    r.p = data
    r.end = data + size
    r.event.ptr = NULL
    r.payload.ptr = NULL
    if not _object(&r, 0, False):
        return False
    _skip_space(&r)
    if r.p != r.end or r.event.ptr == NULL or r.payload.ptr == NULL or not _is(r.event, b"media", 5):
        return False
    payload[0] = r.payload
    return True


cdef Py_ssize_t _b64_decode(const char* src, Py_ssize_t size, char* dst) noexcept nogil:
    """Strict base64 (whole quads, padding only at the end); -1 when anything else."""
    cdef Py_ssize_t i, o = 0, padding = 0
    cdef int a, b, c, d
    if size % 4:
        return -1
    if size and src[size - 1] == b'=':
        padding = 2 if src[size - 2] == b'=' else 1
    for i in range(0, size, 4):
        a = B64_VALUE[<unsigned char>src[i]]
        b = B64_VALUE[<unsigned char>src[i + 1]]
        if i + 4 == size and padding:
            c = 0 if padding == 2 else B64_VALUE[<unsigned char>src[i + 2]]
            d = 0
        else:
            c = B64_VALUE[<unsigned char>src[i + 2]]
            d = B64_VALUE[<unsigned char>src[i + 3]]
        if (a | b | c | d) < 0:
            return -1
        dst[o] = <char>((a << 2) | (b >> 4))
        dst[o + 1] = <char>(((b & 15) << 4) | (c >> 2))
        dst[o + 2] = <char>(((c & 3) << 6) | d)
        o += 3
    return o - padding  # bits beyond the data are ignored, as binascii does


cdef Py_ssize_t _b64_encode(const char* src, Py_ssize_t size, char* dst) noexcept nogil:
    cdef Py_ssize_t i = 0, o = 0
    cdef unsigned int v
    while i + 2 < size:
        v = (<unsigned char>src[i]) << 16 | (<unsigned char>src[i + 1]) << 8 | <unsigned char>src[i + 2]
        dst[o] = B64_ALPHABET[v >> 18]
        dst[o + 1] = B64_ALPHABET[(v >> 12) & 63]
        dst[o + 2] = B64_ALPHABET[(v >> 6) & 63]
        dst[o + 3] = B64_ALPHABET[v & 63]
        i += 3
        o += 4
    if i < size:
        v = (<unsigned char>src[i]) << 16
        if i + 1 < size:
            v |= (<unsigned char>src[i + 1]) << 8
        dst[o] = B64_ALPHABET[v >> 18]
        dst[o + 1] = B64_ALPHABET[(v >> 12) & 63]
        dst[o + 2] = B64_ALPHABET[(v >> 6) & 63] if i + 1 < size else b'='
        dst[o + 3] = b'='
        o += 4
    return o


cdef inline Py_ssize_t _media_tail(const char* audio, Py_ssize_t size, char* out) noexcept nogil:
    """After a stream's prefix: the audio in base64 and the closing `"}}`; returns the bytes written."""
    cdef Py_ssize_t n = _b64_encode(audio, size, out)
    memcpy(out + n, MEDIA_SUFFIX, 3)
    return n + 3


cdef inline Py_ssize_t _media_tail_size(Py_ssize_t size) noexcept nogil:
    return (size + 2) // 3 * 4 + 3


cdef Py_ssize_t _decode_into(bytearray buffer, Py_ssize_t offset, Span payload) except -2:
    """The payload's audio into `buffer` from `offset`, sized to fit exactly; -1 if not strict base64."""
    cdef Py_ssize_t size
    if PyByteArray_GET_SIZE(buffer) < offset + payload.size // 4 * 3:
        PyByteArray_Resize(buffer, offset + payload.size // 4 * 3)
    size = _b64_decode(payload.ptr, payload.size, PyByteArray_AS_STRING(buffer) + offset)
    if size >= 0:
        PyByteArray_Resize(buffer, offset + size)
    return size


def media_audio(bytes message):
    """The audio of a Twilio media message the fast path recognises, else None (for tests)."""
    cdef Span payload
    cdef bytearray audio = bytearray()
    if not _media_payload(PyBytes_AS_STRING(message), PyBytes_GET_SIZE(message), &payload):
        return None
    return None if _decode_into(audio, 0, payload) < 0 else bytes(audio)


def media_message(bytes prefix, bytes audio):
    """What MediaRelay sends Twilio for `audio` (for tests)."""
    cdef bytearray out = bytearray(PyBytes_GET_SIZE(prefix) + _media_tail_size(PyBytes_GET_SIZE(audio)))
    cdef char* p = PyByteArray_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix))
    _media_tail(PyBytes_AS_STRING(audio), PyBytes_GET_SIZE(audio), p + PyBytes_GET_SIZE(prefix))
    return bytes(out)


# ---- the relay ---------------------------------------------------------------------------------


cdef class MediaRelay:
    """One call's two sockets and its audio state; CallBridge (Python) is the rest of the call."""

    cdef public WSTransport twilio
    cdef public WSTransport agent  # None until the voice agent is connected
    cdef public bint relaying  # audio flows both ways
    cdef public double last_from_twilio
    cdef public double last_to_agent
    cdef public long frames_in
    cdef public long frames_out
    cdef public long malformed
    cdef bytearray _to_agent  # [headroom][audio]
    cdef bytearray _to_twilio  # [headroom][{"event":"media","streamSid":"…","media":{"payload":"][base64]["}}]
    cdef Py_ssize_t _prefix_end
    cdef long[LATENCY_BUCKETS] _latency_counts
    cdef double _latency_sum

    def __init__(self, WSTransport twilio):
        self.twilio = twilio
        self.agent = None
        self.relaying = False
        self.last_from_twilio = self.last_to_agent = _monotonic()
        self._to_agent = bytearray(HEADROOM)
        self._to_twilio = bytearray(HEADROOM)
        self._prefix_end = HEADROOM
        self._latency_sum = 0.0
        for i in range(LATENCY_BUCKETS):
            self._latency_counts[i] = 0

    cdef inline void _took(self, double since) noexcept:
        cdef double took = _monotonic() - since
        cdef int i = 0
        while i < LATENCY_BUCKETS - 1 and took > LATENCY_BOUNDS[i]:
            i += 1
        self._latency_counts[i] += 1
        self._latency_sum += took

    def latency_histogram(self):
        """Frames relayed so far by how long each spent here: (counts per bucket, total seconds)."""
        return [self._latency_counts[i] for i in range(LATENCY_BUCKETS)], self._latency_sum

    def set_stream(self, str stream_sid):
        """Audio to Twilio names the stream; streamSid is alphanumeric (checked), so no escaping."""
        prefix = f'{{"event":"media","streamSid":"{stream_sid}","media":{{"payload":"'.encode()
        self._to_twilio = bytearray(HEADROOM) + prefix
        self._prefix_end = HEADROOM + len(prefix)

    cdef void from_twilio(self, const char* data, Py_ssize_t size) except *:
        cdef Span payload
        self.last_from_twilio = _monotonic()
        if _media_payload(data, size, &payload):
            if not self.relaying:
                return
            if _decode_into(self._to_agent, HEADROOM, payload) >= 0:
                self.agent.send_reuse_external_bytearray(WSMsgType.BINARY, self._to_agent, HEADROOM)
                self.last_to_agent = self.last_from_twilio
                self.frames_in += 1
                self._took(self.last_from_twilio)
                return
        (<object>self).twilio_message(PyBytes_FromStringAndSize(data, size))

    def relay_to_agent(self, audio):
        """Audio the general path decoded (a media message the fast path left to it)."""
        if self.relaying:
            self.agent.send(WSMsgType.BINARY, audio)
            self.last_to_agent = self.last_from_twilio
            self.frames_in += 1

    cdef void from_agent(self, const char* audio, Py_ssize_t size) except *:
        if not self.relaying:
            return
        cdef double received = _monotonic()
        PyByteArray_Resize(self._to_twilio, self._prefix_end + _media_tail_size(size))
        _media_tail(audio, size, PyByteArray_AS_STRING(self._to_twilio) + self._prefix_end)
        self.twilio.send_reuse_external_bytearray(WSMsgType.TEXT, self._to_twilio, HEADROOM)
        self.frames_out += 1
        self._took(received)


cdef void _answer_close(WSTransport transport, WSFrame frame) except *:
    transport.send_close(frame.get_close_code())
    transport.disconnect()


cdef class TwilioListener(WSListener):
    """One Media Stream from Twilio; `on_connected(transport)` makes its call (a MediaRelay)."""

    cdef MediaRelay relay
    cdef object _on_connected

    def __init__(self, on_connected):
        self._on_connected = on_connected
        self.relay = None

    cpdef on_ws_connected(self, WSTransport transport):
        self.relay = self._on_connected(transport)

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType kind = frame.msg_type
        if kind == WSMsgType.TEXT and frame.fin:
            self.relay.from_twilio(frame.payload_ptr, frame.payload_size)
        elif kind == WSMsgType.CLOSE:
            _answer_close(transport, frame)
        elif kind != WSMsgType.PING and kind != WSMsgType.PONG:
            self.relay.malformed += 1  # binary or fragmented: Twilio sends neither

    cpdef on_ws_disconnected(self, WSTransport transport):
        if self.relay is not None:
            (<object>self.relay).side_closed("twilio")


cdef class AgentListener(WSListener):
    """The call's Voice Agent socket (Deepgram, or the local emulator)."""

    cdef MediaRelay relay

    def __init__(self, MediaRelay relay):
        self.relay = relay

    cpdef on_ws_frame(self, WSTransport transport, WSFrame frame):
        cdef WSMsgType kind = frame.msg_type
        if kind == WSMsgType.BINARY and frame.fin:
            self.relay.from_agent(frame.payload_ptr, frame.payload_size)
        elif kind == WSMsgType.TEXT and frame.fin:
            (<object>self.relay).agent_message(frame.get_payload_as_bytes())
        elif kind == WSMsgType.CLOSE:
            _answer_close(transport, frame)
        elif kind != WSMsgType.PING and kind != WSMsgType.PONG:
            (<object>self.relay).agent_fragment()

    cpdef on_ws_disconnected(self, WSTransport transport):
        (<object>self.relay).side_closed("agent")
