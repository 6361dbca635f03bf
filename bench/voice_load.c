/* The load for bench/voice_bridge.py: N Twilio Media Streams and a Deepgram-protocol voice agent
 * in echo mode, in one epoll loop.
 *
 * Why C: the bridge relays each frame with two socket reads and two writes; a load process in
 * Python needs as much CPU as the bridge it measures, and on a small machine it ends up measuring
 * its own starvation. This one spends its time in the kernel's sockets, like the bridge's peers.
 *
 * Protocol with the conductor (bench/voice_bridge.py):
 *   argv: bridge_host bridge_port bridge_path agent_port calls seconds twilio_signature
 *   stdin: one Twilio `start` message (JSON, one line) per call, for stream MZ<index>; later "go".
 *   stdout: {"ready": N} once every call has reached the agent (its Settings arrived), then,
 *   after "go" and the audio, one JSON line of figures (with its own CPU seconds meanwhile).
 * Every audio frame carries (call u32, sequence u32, send time i64 ns, CLOCK_MONOTONIC) big-endian
 * in its first 16 bytes, so
 *   inbound:  Twilio side sent -> agent received
 *   outbound: agent sent       -> Twilio side received
 * `lag` is how late the load itself sent what was due: if it grows, the load is starved and the
 * figures overstate the bridge's latency. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define FRAME_BYTES 160 /* 20 ms of 8 kHz mu-law */
#define FRAME_NS 20000000LL
#define IN_CAP (1 << 16)
#define MAX_EVENTS 512
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum kind { LISTENER, TWILIO, AGENT, CONTROL };

typedef struct conn {
    enum kind kind;
    int fd;
    int upgraded;
    unsigned char in[IN_CAP];
    size_t in_len;
    unsigned char *out; /* what the kernel did not take yet */
    size_t out_len, out_cap;
} conn_t;

static int epfd;
static long calls_total, agent_sessions;
static int recording, go;
static int64_t *inbound, *outbound, *lag;
static size_t n_inbound, n_outbound, n_lag, cap_samples;

static void die(const char *what) {
    fprintf(stderr, "voice_load: %s: %s\n", what, strerror(errno));
    exit(1);
}

static int64_t clock_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int64_t now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* ---- SHA-1 (RFC 3174), only for Sec-WebSocket-Accept ----------------------------------------- */

static uint32_t rol(uint32_t v, int n) { return (v << n) | (v >> (32 - n)); }

static void sha1(const unsigned char *data, size_t len, unsigned char digest[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    size_t padded = ((len + 8) / 64 + 1) * 64;
    unsigned char *msg = calloc(padded, 1);
    memcpy(msg, data, len);
    msg[len] = 0x80;
    uint64_t bits = (uint64_t)len * 8;
    for (int i = 0; i < 8; i++) msg[padded - 1 - i] = (unsigned char)(bits >> (8 * i));
    for (size_t chunk = 0; chunk < padded; chunk += 64) {
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)msg[chunk + 4 * i] << 24 | (uint32_t)msg[chunk + 4 * i + 1] << 16 |
                   (uint32_t)msg[chunk + 4 * i + 2] << 8 | msg[chunk + 4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) f = (b & c) | (~b & d), k = 0x5A827999;
            else if (i < 40) f = b ^ c ^ d, k = 0x6ED9EBA1;
            else if (i < 60) f = (b & c) | (b & d) | (c & d), k = 0x8F1BBCDC;
            else f = b ^ c ^ d, k = 0xCA62C1D6;
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d, d = c, c = rol(b, 30), b = a, a = t;
        }
        h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e;
    }
    free(msg);
    for (int i = 0; i < 5; i++)
        for (int j = 0; j < 4; j++) digest[4 * i + j] = (unsigned char)(h[i] >> (24 - 8 * j));
}

/* ---- base64 ------------------------------------------------------------------------------------ */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64_encode(const unsigned char *src, size_t len, char *dst) {
    size_t o = 0, i = 0;
    for (; i + 2 < len; i += 3) {
        uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
        dst[o++] = B64[v >> 18], dst[o++] = B64[(v >> 12) & 63], dst[o++] = B64[(v >> 6) & 63], dst[o++] = B64[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)src[i] << 16 | (i + 1 < len ? (uint32_t)src[i + 1] << 8 : 0);
        dst[o++] = B64[v >> 18], dst[o++] = B64[(v >> 12) & 63];
        dst[o++] = i + 1 < len ? B64[(v >> 6) & 63] : '=';
        dst[o++] = '=';
    }
    return o;
}

static int b64_value(char c) {
    const char *p = c ? strchr(B64, c) : NULL;
    return p ? (int)(p - B64) : -1;
}

/* Decodes the first `groups` 4-character groups (no padding expected there). */
static int b64_decode_prefix(const char *src, int groups, unsigned char *dst) {
    for (int g = 0; g < groups; g++) {
        int v[4];
        for (int i = 0; i < 4; i++)
            if ((v[i] = b64_value(src[4 * g + i])) < 0) return -1;
        uint32_t x = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        dst[3 * g] = (unsigned char)(x >> 16), dst[3 * g + 1] = (unsigned char)(x >> 8), dst[3 * g + 2] = (unsigned char)x;
    }
    return 0;
}

/* ---- stamps -------------------------------------------------------------------------------------- */

static void put_stamp(unsigned char *p, uint32_t call, uint32_t seq, int64_t t) {
    uint32_t c = htonl(call), s = htonl(seq);
    uint64_t u = (uint64_t)t;
    memcpy(p, &c, 4), memcpy(p + 4, &s, 4);
    for (int i = 0; i < 8; i++) p[8 + i] = (unsigned char)(u >> (56 - 8 * i));
}

static int64_t stamp_time(const unsigned char *p) {
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u = u << 8 | p[8 + i];
    return (int64_t)u;
}

static void record(int64_t *samples, size_t *n, int64_t value) {
    if (recording && *n < cap_samples) samples[(*n)++] = value;
}

/* ---- sockets ------------------------------------------------------------------------------------- */

static void watch(conn_t *c, uint32_t events, int op) {
    struct epoll_event ev = {.events = events, .data.ptr = c};
    if (epoll_ctl(epfd, op, c->fd, &ev) < 0) die("epoll_ctl");
}

static conn_t *new_conn(enum kind kind, int fd) {
    conn_t *c = calloc(1, sizeof(conn_t));
    if (!c) die("calloc");
    c->kind = kind, c->fd = fd;
    if (kind != CONTROL) {
        int one = 1;
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        if (kind != LISTENER) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    watch(c, EPOLLIN, EPOLL_CTL_ADD);
    return c;
}

/* A Twilio stream's record outlives its socket (the run loop holds it); the others go. */
static void close_conn(conn_t *c) {
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
    c->out_len = 0;
    if (c->kind != TWILIO) {
        free(c->out);
        free(c);
    }
}

/* Writes now; what the kernel does not take waits for EPOLLOUT (never reordered). */
static void send_bytes(conn_t *c, const unsigned char *data, size_t len) {
    if (c->fd < 0) return;
    if (c->out_len == 0) {
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN) return; /* the peer is gone; its read side will say so */
        if (n < 0) n = 0;
        data += n, len -= (size_t)n;
        if (len == 0) return;
        watch(c, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
    }
    if (c->out_len + len > c->out_cap) {
        c->out_cap = (c->out_len + len) * 2;
        if (!(c->out = realloc(c->out, c->out_cap))) die("realloc");
    }
    memcpy(c->out + c->out_len, data, len);
    c->out_len += len;
}

static void flush_out(conn_t *c) {
    ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (n <= 0) return;
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (size_t)n;
    if (c->out_len == 0) watch(c, EPOLLIN, EPOLL_CTL_MOD);
}

/* One websocket frame; a client (Twilio side) masks, a server (agent side) does not. */
static void send_frame(conn_t *c, int opcode, const unsigned char *payload, size_t len) {
    unsigned char buf[16 + 4096];
    size_t h = 0;
    int masked = c->kind == TWILIO;
    if (len > 4096) return;
    buf[h++] = (unsigned char)(0x80 | opcode);
    if (len < 126) buf[h++] = (unsigned char)((masked ? 0x80 : 0) | len);
    else buf[h++] = (unsigned char)((masked ? 0x80 : 0) | 126), buf[h++] = (unsigned char)(len >> 8), buf[h++] = (unsigned char)len;
    if (masked) {
        uint32_t key = (uint32_t)random();
        memcpy(buf + h, &key, 4);
        for (size_t i = 0; i < len; i++) buf[h + 4 + i] = payload[i] ^ buf[h + (i & 3)];
        h += 4;
    } else {
        memcpy(buf + h, payload, len);
    }
    send_bytes(c, buf, h + len);
}

static void send_text(conn_t *c, const char *text) { send_frame(c, 1, (const unsigned char *)text, strlen(text)); }

/* ---- the two peers ------------------------------------------------------------------------------- */

static void agent_frame(conn_t *c, int opcode, unsigned char *payload, size_t len) {
    if (opcode == 2 && len >= 16) { /* audio: straight back, re-stamped */
        int64_t now = now_ns();
        record(inbound, &n_inbound, now - stamp_time(payload));
        uint32_t call, seq;
        memcpy(&call, payload, 4), memcpy(&seq, payload + 4, 4);
        put_stamp(payload, ntohl(call), ntohl(seq), now_ns());
        send_frame(c, 2, payload, len);
    } else if (opcode == 1 && memmem(payload, len, "\"Settings\"", 10)) {
        agent_sessions++;
        send_text(c, "{\"type\":\"SettingsApplied\"}");
    } else if (opcode == 8) {
        send_frame(c, 8, payload, len < 2 ? len : 2);
    }
}

static void twilio_frame(conn_t *c, int opcode, unsigned char *payload, size_t len) {
    (void)c;
    if (opcode != 1 || !memmem(payload, len, "\"media\"", 7)) return;
    unsigned char *p = memmem(payload, len, "\"payload\":\"", 11);
    unsigned char stamp[18];
    if (p && (size_t)(p + 11 + 24 - payload) <= len && b64_decode_prefix((char *)p + 11, 6, stamp) == 0)
        record(outbound, &n_outbound, now_ns() - stamp_time(stamp));
}

/* Parses whole frames from c->in; returns -1 when the connection should close. */
static int read_frames(conn_t *c) {
    size_t at = 0;
    for (;;) {
        unsigned char *f = c->in + at;
        size_t avail = c->in_len - at, h = 2, len;
        if (avail < 2) break;
        int opcode = f[0] & 0x0f, masked = f[1] & 0x80;
        len = f[1] & 0x7f;
        if (len == 126) {
            if (avail < 4) break;
            len = (size_t)f[2] << 8 | f[3], h = 4;
        } else if (len == 127) {
            if (avail < 10) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = len << 8 | f[2 + i];
            h = 10;
        }
        if (len > IN_CAP - 14) return -1;
        if (avail < h + (masked ? 4 : 0) + len) break;
        unsigned char *payload = f + h + (masked ? 4 : 0);
        if (masked)
            for (size_t i = 0; i < len; i++) payload[i] ^= f[h + (i & 3)];
        if (c->kind == AGENT) agent_frame(c, opcode, payload, len);
        else twilio_frame(c, opcode, payload, len);
        at += h + (masked ? 4 : 0) + len;
        if (opcode == 8) return -1;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
    return 0;
}

/* The agent side's HTTP upgrade (the bridge's ws_connect). */
static int agent_upgrade(conn_t *c) {
    c->in[c->in_len] = 0;
    char *end = strstr((char *)c->in, "\r\n\r\n");
    if (!end) return c->in_len >= IN_CAP - 1 ? -1 : 0;
    char *key = strcasestr((char *)c->in, "\r\nSec-WebSocket-Key:");
    if (!key || key > end) return -1;
    key += 20;
    while (*key == ' ') key++;
    size_t key_len = strcspn(key, "\r");
    char joined[128], accept[64], response[256];
    unsigned char digest[20];
    if (key_len > 64) return -1;
    snprintf(joined, sizeof joined, "%.*s%s", (int)key_len, key, WS_GUID);
    sha1((unsigned char *)joined, strlen(joined), digest);
    accept[b64_encode(digest, 20, accept)] = 0;
    int n = snprintf(response, sizeof response,
                     "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n", accept);
    send_bytes(c, (unsigned char *)response, (size_t)n);
    size_t used = (size_t)(end + 4 - (char *)c->in);
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    c->upgraded = 1;
    send_text(c, "{\"type\":\"Welcome\",\"request_id\":\"bench\"}");
    return 1;
}

static void on_readable(conn_t *c) {
    if (c->kind == LISTENER) {
        int fd;
        while ((fd = accept(c->fd, NULL, NULL)) >= 0) new_conn(AGENT, fd);
        return;
    }
    if (c->kind == CONTROL) {
        char line[64];
        ssize_t n = read(c->fd, line, sizeof line);
        if (n <= 0 || memmem(line, (size_t)n, "go", 2)) go = 1;
        return;
    }
    /* One read per readiness: epoll is level-triggered, so whatever is left is reported again. */
    ssize_t n = recv(c->fd, c->in + c->in_len, IN_CAP - 1 - c->in_len, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
        close_conn(c);
        return;
    }
    c->in_len += (size_t)n;
    if (c->kind == AGENT && !c->upgraded) {
        int done = agent_upgrade(c);
        if (done < 0) close_conn(c);
        if (done <= 0) return;
    }
    if (read_frames(c) < 0) close_conn(c);
}

static void poll_once(int64_t timeout_ns) {
    struct epoll_event events[MAX_EVENTS];
    struct timespec timeout = {.tv_sec = timeout_ns / 1000000000LL, .tv_nsec = timeout_ns % 1000000000LL};
    int n = epoll_pwait2(epfd, events, MAX_EVENTS, timeout_ns < 0 ? NULL : &timeout, NULL);
    if (n < 0 && errno != EINTR) die("epoll_pwait2");
    for (int i = 0; i < n; i++) {
        conn_t *c = events[i].data.ptr;
        if (events[i].events & EPOLLOUT) flush_out(c);
        if (events[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) on_readable(c);
    }
}

/* A Twilio stream: connect and upgrade synchronously (the bridge answers at once), then async. */
static conn_t *open_twilio(const char *host, int port, const char *path, const char *signature, const char *start) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &addr.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect to the bridge");
    char request[768], response[1024];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                     "X-Twilio-Signature: %s\r\n\r\n", path, host, port, signature);
    if (send(fd, request, (size_t)n, 0) != n) die("upgrade request");
    size_t got = 0;
    while (got < sizeof response - 1) {
        ssize_t r = recv(fd, response + got, sizeof response - 1 - got, 0);
        if (r <= 0) die("upgrade response");
        got += (size_t)r;
        response[got] = 0;
        if (strstr(response, "\r\n\r\n")) break;
    }
    if (strncmp(response, "HTTP/1.1 101", 12) != 0) {
        fprintf(stderr, "voice_load: the bridge refused the stream: %.60s\n", response);
        exit(1);
    }
    conn_t *c = new_conn(TWILIO, fd);
    c->upgraded = 1;
    send_text(c, "{\"event\":\"connected\",\"protocol\":\"Call\",\"version\":\"1.0.0\"}");
    send_text(c, start);
    return c;
}

static int compare(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double percentile_ms(int64_t *samples, size_t n, double p) {
    if (n == 0) return 0.0;
    size_t i = (size_t)((double)n * p);
    return (double)samples[i < n ? i : n - 1] / 1e6;
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: voice_load bridge_host bridge_port bridge_path agent_port calls seconds "
                        "twilio_signature\n");
        return 2;
    }
    const char *host = argv[1], *path = argv[3];
    int bridge_port = atoi(argv[2]), agent_port = atoi(argv[4]);
    calls_total = atol(argv[5]);
    long rounds = (long)(atof(argv[6]) * 1e9 / FRAME_NS);
    if (calls_total <= 0 || rounds <= 0) return 2;
    cap_samples = (size_t)(calls_total * rounds);
    inbound = malloc(cap_samples * sizeof(int64_t));
    outbound = malloc(cap_samples * sizeof(int64_t));
    lag = malloc(cap_samples * sizeof(int64_t));
    if (!inbound || !outbound || !lag) die("malloc");
    if ((epfd = epoll_create1(0)) < 0) die("epoll_create1");

    int listener = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)agent_port)};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(listener, 4096) < 0) die("agent listener");
    new_conn(LISTENER, listener);

    conn_t **streams = calloc((size_t)calls_total, sizeof(conn_t *));
    char *start = NULL;
    size_t start_cap = 0;
    for (long i = 0; i < calls_total; i++) {
        if (getline(&start, &start_cap, stdin) <= 0) die("a start message per call on stdin");
        start[strcspn(start, "\n")] = 0;
        streams[i] = open_twilio(host, bridge_port, path, argv[7], start);
        poll_once(0); /* the bridge's agent sockets, meanwhile */
    }
    int64_t deadline = now_ns() + 120 * 1000000000LL;
    while (agent_sessions < calls_total) {
        if (now_ns() > deadline) {
            fprintf(stderr, "voice_load: only %ld of %ld calls reached the agent\n", agent_sessions, calls_total);
            return 1;
        }
        poll_once(10000000);
    }
    printf("{\"ready\": %ld}\n", calls_total);
    fflush(stdout);
    new_conn(CONTROL, 0);
    while (!go) poll_once(-1);

    /* Each call has its own phase within the 20 ms, like independent phones. */
    char media_prefix[96];
    unsigned char audio[FRAME_BYTES], message[512];
    memset(audio, 0x7f, sizeof audio);
    int64_t begin = now_ns() + 50000000LL, cpu_begin = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    recording = 1;
    for (long seq = 0, index = 0; seq < rounds;) {
        int64_t due = begin + FRAME_NS * seq + FRAME_NS * index / calls_total, now = now_ns();
        if (due > now) {
            poll_once(due - now);
            continue;
        }
        conn_t *c = streams[index];
        record(lag, &n_lag, now - due);
        put_stamp(audio, (uint32_t)index, (uint32_t)seq, now_ns());
        size_t m = (size_t)snprintf(media_prefix, sizeof media_prefix,
                                    "{\"event\":\"media\",\"streamSid\":\"MZ%ld\",\"media\":{\"track\":\"inbound\",\"payload\":\"", index);
        memcpy(message, media_prefix, m);
        m += b64_encode(audio, FRAME_BYTES, (char *)message + m);
        memcpy(message + m, "\"}}", 3);
        send_frame(c, 1, message, m + 3);
        if (++index == calls_total) index = 0, seq++;
        if ((index & 15) == 0) poll_once(0); /* never starve the echoes while catching up */
    }
    int64_t tail = now_ns() + 200000000LL; /* the last echoes */
    while (now_ns() < tail) poll_once(tail - now_ns());
    recording = 0;
    double cpu_s = (double)(clock_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu_begin) / 1e9;

    for (long i = 0; i < calls_total; i++) {
        char stop[96];
        snprintf(stop, sizeof stop, "{\"event\":\"stop\",\"streamSid\":\"MZ%ld\"}", i);
        send_text(streams[i], stop);
        if (streams[i]->fd >= 0) shutdown(streams[i]->fd, SHUT_WR);
    }
    qsort(inbound, n_inbound, sizeof(int64_t), compare);
    qsort(outbound, n_outbound, sizeof(int64_t), compare);
    qsort(lag, n_lag, sizeof(int64_t), compare);
    printf("{\"calls\": %ld, \"frames\": %zu, \"frames_back\": %zu, \"p50_added_ms_in\": %.3f, \"p99_added_ms_in\": %.3f, "
           "\"p50_added_ms_out\": %.3f, \"p99_added_ms_out\": %.3f, \"p99_load_lag_ms\": %.3f, \"load_cpu_s\": %.3f}\n",
           calls_total, n_inbound, n_outbound, percentile_ms(inbound, n_inbound, 0.5), percentile_ms(inbound, n_inbound, 0.99),
           percentile_ms(outbound, n_outbound, 0.5), percentile_ms(outbound, n_outbound, 0.99), percentile_ms(lag, n_lag, 0.99), cpu_s);
    fflush(stdout);
    return 0;
}
