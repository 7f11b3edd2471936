/*
 * amber guest probe: measurements inside an endpoint VM, timed by the
 * guest's own clocks, controlled from the host over the VM's management NIC.
 * Plain C, no dependencies: built with `gcc -static -O2` by
 * scripts/build-guest.sh and installed as /bin/probe in the initramfs.
 *
 *   probe serve [port=7700] [dir=/tmp/probe]   control (TCP) and clock (UDP) on PORT
 *   probe run SECONDS [START OPTIONS]          measure locally, write files, exit
 *
 * Measurements (any subset, started together):
 *   rx     kernel timestamps (CLOCK_REALTIME, software) of the TCP segments
 *          of one port on one interface, arriving and (tx=1, the default)
 *          leaving: an AF_PACKET TPACKET_V3 ring with a classic BPF filter.
 *          A leaving frame is stamped as the stack hands it to the driver,
 *          an arriving one as the stack receives it.
 *   timer  a loop of relative CLOCK_MONOTONIC sleeps (10 ms), each timed.
 *   cpu    a fixed CPU-bound work unit (calibrated once at start to about
 *          10 ms), repeated, each timed by CLOCK_MONOTONIC.
 *
 * Control protocol (TCP, one command line per connection, one reply line):
 *   start [rx] [timer] [cpu] [port=5201] [iface=eth0] [gro=off|keep] [tx=1|0]
 *         [rx_max=1000000] [timer_max=200000] [cpu_max=200000]
 *         [sleep_us=10000] [unit_us=10000] [fifo=1]
 *                     -> "ok started ... cpu_iters=N cpu_ns=N"
 *   stop              -> stops, writes DIR/{rx,timer,cpu}.bin, "ok rx=N timer=N cpu=N"
 *   status            -> "ok running=0|1 rx=N timer=N cpu=N"
 *   get rx|timer|cpu  -> "ok SIZE\n" followed by the file's SIZE bytes
 *   get /PATH         -> the same for any regular file (iperf3's JSON output)
 *   quit              -> "ok", the daemon exits
 * Errors: "error <reason>".
 *
 * Clock protocol (UDP, same port): a request of 16 bytes
 *   u32 magic 0x434d4241 ("ABMC" little-endian), u32 seq, u64 token
 * is answered at once with 32 bytes
 *   u32 magic, u32 seq, u64 token, i64 CLOCK_MONOTONIC ns, i64 CLOCK_REALTIME ns
 * read right after the request was received. The host keeps the sample with
 * the smallest round trip and pairs the guest clocks with its midpoint.
 *
 * File format (little-endian), one file per measurement:
 *   off  size
 *     0   8   magic "AMBPROBE"
 *     8   2   version (2; version 1 had 16-byte rx records without ack,
 *             IP id, peer port and outgoing frames)
 *    10   2   kind: 1 rx, 2 timer, 3 cpu
 *    12   4   record size in bytes (rx 24, timer and cpu 16)
 *    16   8   records stored
 *    24   8   records lost because the buffer was full
 *    32   8   rx: frames the kernel dropped (ring full); others 0
 *    40   8   CLOCK_MONOTONIC ns at start    48  8  CLOCK_REALTIME ns at start
 *    56   8   CLOCK_MONOTONIC ns at stop     64  8  CLOCK_REALTIME ns at stop
 *    72   8   param a: rx TCP port; timer nominal sleep ns; cpu iterations per unit
 *    80   8   param b: rx ifindex; timer 1 if SCHED_FIFO; cpu calibrated ns per unit
 *    88   8   param c: rx bit 0: GRO was switched off, bit 1: leaving frames
 *             recorded too; others 0
 *    96       records
 *   rx record:    i64 timestamp ns (CLOCK_REALTIME), u32 TCP seq, u32 TCP ack,
 *                 u16 TCP payload bytes, u16 IPv4 id, u16 the peer's port (the
 *                 other end's port of the connection), u8 TCP flags, u8 dir:
 *                 bit 0 set: from the port (clear: to it), bit 1 set: the
 *                 frame left this guest (clear: it arrived)
 *   timer record: i64 start ns (CLOCK_MONOTONIC), i64 duration ns
 *   cpu record:   i64 start ns (CLOCK_MONOTONIC), i64 duration ns
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/ethtool.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <linux/sockios.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { KIND_RX = 1, KIND_TIMER = 2, KIND_CPU = 3, NKIND = 4 };
static const char *const kind_name[NKIND] = {"", "rx", "timer", "cpu"};

#define CLOCK_MAGIC 0x434d4241u
#define HEADER_BYTES 96
#define FILE_VERSION 2
#define RECORD_BYTES 16
#define RX_RECORD_BYTES 24

enum { DIR_FROM_PORT = 1, DIR_OUTGOING = 2 };

struct rx_record {
  int64_t ts_ns;
  uint32_t seq;
  uint32_t ack;
  uint16_t payload;
  uint16_t ip_id;
  uint16_t peer_port;
  uint8_t flags;
  uint8_t dir;
};
struct timed_record {
  int64_t start_ns;
  int64_t duration_ns;
};
_Static_assert(sizeof(struct rx_record) == RX_RECORD_BYTES, "rx record size");
_Static_assert(sizeof(struct timed_record) == RECORD_BYTES, "timed record size");

struct series {
  void *mem;
  size_t cap;
  _Atomic uint64_t count;
  uint64_t lost_full;
  uint64_t lost_kernel;
  uint64_t param[3];
};

struct options {
  int want[NKIND];
  int port;
  char iface[IF_NAMESIZE];
  int gro_off;
  int tx;
  size_t max[NKIND];
  int64_t sleep_ns;
  int64_t unit_ns;
  int fifo;
};

static struct {
  char dir[256];
  struct options opt;
  struct series s[NKIND];
  pthread_t thread[NKIND];
  int active[NKIND];
  atomic_int running;
  int64_t start_mono, start_real, stop_mono, stop_real;
  int rx_fd;
  uint8_t *ring;
  size_t ring_bytes;
  unsigned ring_blocks, block_bytes;
  int gro_restore;  /* -1: untouched, else the previous GRO state */
  uint64_t cpu_iters;
  pthread_mutex_t lock;  /* one control command at a time */
} g = {.rx_fd = -1, .gro_restore = -1, .lock = PTHREAD_MUTEX_INITIALIZER};

static size_t record_bytes(int kind) { return kind == KIND_RX ? RX_RECORD_BYTES : RECORD_BYTES; }

static int64_t now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* CLOCK_MONOTONIC and CLOCK_REALTIME read together (realtime between two
 * monotonic reads, paired with their midpoint). */
static void clock_pair(int64_t *mono, int64_t *real) {
  int64_t a = now_ns(CLOCK_MONOTONIC);
  *real = now_ns(CLOCK_REALTIME);
  int64_t b = now_ns(CLOCK_MONOTONIC);
  *mono = a + (b - a) / 2;
}

static void logf_(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void set_fifo(int prio) {
  struct sched_param sp = {.sched_priority = prio};
  if (pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp) != 0) logf_("probe: no SCHED_FIFO");
}

/* ---- rx: AF_PACKET TPACKET_V3 ring ---- */

/* IPv4 TCP frames (unfragmented or first fragment) with source or
 * destination port `port`; 128 bytes of each are enough for the headers. */
static int attach_filter(int fd, int port) {
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 12),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ETHERTYPE_IP, 0, 10),
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 23),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, 0, 8),
      BPF_STMT(BPF_LD | BPF_H | BPF_ABS, 20),
      BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, 0x1fff, 6, 0),
      BPF_STMT(BPF_LDX | BPF_B | BPF_MSH, 14),
      BPF_STMT(BPF_LD | BPF_H | BPF_IND, 14),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)port, 2, 0),
      BPF_STMT(BPF_LD | BPF_H | BPF_IND, 16),
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (uint32_t)port, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 128),
      BPF_STMT(BPF_RET | BPF_K, 0),
  };
  struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
  return setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog);
}

static int gro_ioctl(const char *iface, uint32_t cmd, uint32_t *value) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct ethtool_value ev = {.cmd = cmd, .data = *value};
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", iface);
  ifr.ifr_data = (char *)&ev;
  int r = ioctl(fd, SIOCETHTOOL, &ifr);
  close(fd);
  *value = ev.data;
  return r;
}

static int rx_open(char *err, size_t errlen) {
  const struct options *o = &g.opt;
  unsigned ifindex = if_nametoindex(o->iface);
  if (ifindex == 0) {
    snprintf(err, errlen, "interface %s: %s", o->iface, strerror(errno));
    return -1;
  }
  int fd = socket(AF_PACKET, SOCK_RAW | SOCK_CLOEXEC, 0); /* no frames before bind */
  if (fd < 0) {
    snprintf(err, errlen, "AF_PACKET socket: %s", strerror(errno));
    return -1;
  }
  int one = 1, v3 = TPACKET_V3;
  g.block_bytes = 1u << 18;
  g.ring_blocks = 16;
  struct tpacket_req3 req = {
      .tp_block_size = g.block_bytes,
      .tp_block_nr = g.ring_blocks,
      .tp_frame_size = 2048,
      .tp_frame_nr = g.block_bytes / 2048 * g.ring_blocks,
      .tp_retire_blk_tov = 20, /* ms: a quiet link still hands blocks over */
  };
  if (attach_filter(fd, o->port) != 0 ||
      (!o->tx && setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0) ||
      /* Stamps each frame as the stack receives it, not when the ring sees it. */
      setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one) != 0 ||
      setsockopt(fd, SOL_PACKET, PACKET_VERSION, &v3, sizeof v3) != 0 ||
      setsockopt(fd, SOL_PACKET, PACKET_RX_RING, &req, sizeof req) != 0) {
    snprintf(err, errlen, "AF_PACKET ring set-up: %s", strerror(errno));
    close(fd);
    return -1;
  }
  g.ring_bytes = (size_t)g.block_bytes * g.ring_blocks;
  g.ring = mmap(NULL, g.ring_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
  if (g.ring == MAP_FAILED) {
    snprintf(err, errlen, "mmap of the ring: %s", strerror(errno));
    g.ring = NULL;
    close(fd);
    return -1;
  }
  /* Leaving frames reach only ETH_P_ALL sockets (dev_queue_xmit_nit); the
   * filter keeps IPv4 either way. */
  struct sockaddr_ll sll = {.sll_family = AF_PACKET,
                            .sll_protocol = htons(o->tx ? ETH_P_ALL : ETH_P_IP),
                            .sll_ifindex = (int)ifindex};
  if (bind(fd, (struct sockaddr *)&sll, sizeof sll) != 0) {
    snprintf(err, errlen, "bind to %s: %s", o->iface, strerror(errno));
    munmap(g.ring, g.ring_bytes);
    g.ring = NULL;
    close(fd);
    return -1;
  }
  g.s[KIND_RX].param[0] = (uint64_t)o->port;
  g.s[KIND_RX].param[1] = ifindex;
  g.s[KIND_RX].param[2] = o->tx ? 2 : 0;
  /* GRO would hand the socket merged segments with one timestamp. */
  if (o->gro_off) {
    uint32_t state = 0;
    if (gro_ioctl(o->iface, ETHTOOL_GGRO, &state) == 0) {
      uint32_t off = 0;
      if (state == 0 || gro_ioctl(o->iface, ETHTOOL_SGRO, &off) == 0) {
        g.gro_restore = (int)state;
        g.s[KIND_RX].param[2] |= 1;
      }
    }
    if ((g.s[KIND_RX].param[2] & 1) == 0) logf_("probe: could not switch GRO off on %s", o->iface);
  }
  g.rx_fd = fd;
  return 0;
}

static uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void rx_block(struct tpacket_block_desc *bd, struct series *s) {
  struct rx_record *rec = s->mem;
  uint8_t *p = (uint8_t *)bd + bd->hdr.bh1.offset_to_first_pkt;
  uint64_t n = atomic_load_explicit(&s->count, memory_order_relaxed);
  const uint16_t port = (uint16_t)g.opt.port;
  for (uint32_t i = 0; i < bd->hdr.bh1.num_pkts; ++i) {
    struct tpacket3_hdr *h = (struct tpacket3_hdr *)p;
    const struct sockaddr_ll *sll =
        (const struct sockaddr_ll *)((uint8_t *)h + TPACKET_ALIGN(sizeof *h));
    const uint8_t *ip = (const uint8_t *)h + h->tp_net;
    uint32_t cap = h->tp_snaplen - (uint32_t)(h->tp_net - h->tp_mac);
    unsigned ihl = (ip[0] & 0x0fu) * 4u;
    if (cap >= ihl + 20 && ihl >= 20) {
      const uint8_t *tcp = ip + ihl;
      unsigned tot = be16(ip + 2);
      unsigned doff = (tcp[12] >> 4) * 4u;
      uint16_t sport = be16(tcp), dport = be16(tcp + 2);
      if (n < s->cap) {
        struct rx_record *r = &rec[n];
        r->ts_ns = (int64_t)h->tp_sec * 1000000000 + h->tp_nsec;
        r->seq = be32(tcp + 4);
        r->ack = be32(tcp + 8);
        r->payload = tot > ihl + doff ? (uint16_t)(tot - ihl - doff) : 0;
        r->ip_id = be16(ip + 4);
        r->flags = tcp[13];
        r->dir = (uint8_t)((sport == port ? DIR_FROM_PORT : 0) |
                           (sll->sll_pkttype == PACKET_OUTGOING ? DIR_OUTGOING : 0));
        r->peer_port = sport == port ? dport : sport;
        ++n;
      } else {
        ++s->lost_full;
      }
    }
    p += h->tp_next_offset;
  }
  atomic_store_explicit(&s->count, n, memory_order_release);
}

static void *rx_loop(void *arg) {
  (void)arg;
  if (g.opt.fifo) set_fifo(20);
  struct series *s = &g.s[KIND_RX];
  unsigned block = 0;
  while (atomic_load(&g.running)) {
    struct tpacket_block_desc *bd = (void *)(g.ring + (size_t)block * g.block_bytes);
    if ((__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) == 0) {
      struct pollfd pfd = {.fd = g.rx_fd, .events = POLLIN | POLLERR};
      poll(&pfd, 1, 100);
      continue;
    }
    rx_block(bd, s);
    __atomic_store_n(&bd->hdr.bh1.block_status, TP_STATUS_KERNEL, __ATOMIC_RELEASE);
    block = (block + 1) % g.ring_blocks;
  }
  return NULL;
}

/* Drains what the ring still holds, reads the kernel's drop count, closes. */
static void rx_close(void) {
  if (g.rx_fd < 0) return;
  struct series *s = &g.s[KIND_RX];
  for (unsigned i = 0; i < g.ring_blocks; ++i) {
    struct tpacket_block_desc *bd = (void *)(g.ring + (size_t)i * g.block_bytes);
    if (__atomic_load_n(&bd->hdr.bh1.block_status, __ATOMIC_ACQUIRE) & TP_STATUS_USER) {
      rx_block(bd, s);
    }
  }
  struct tpacket_stats_v3 st;
  socklen_t len = sizeof st;
  if (getsockopt(g.rx_fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) s->lost_kernel = st.tp_drops;
  munmap(g.ring, g.ring_bytes);
  g.ring = NULL;
  close(g.rx_fd);
  g.rx_fd = -1;
  if (g.gro_restore > 0) {
    uint32_t on = 1;
    gro_ioctl(g.opt.iface, ETHTOOL_SGRO, &on);
  }
  g.gro_restore = -1;
}

/* ---- timer and cpu ---- */

static void put_timed(struct series *s, int64_t start, int64_t duration) {
  uint64_t n = atomic_load_explicit(&s->count, memory_order_relaxed);
  if (n >= s->cap) {
    ++s->lost_full;
    return;
  }
  struct timed_record *rec = s->mem;
  rec[n].start_ns = start;
  rec[n].duration_ns = duration;
  atomic_store_explicit(&s->count, n + 1, memory_order_release);
}

static void *timer_loop(void *arg) {
  (void)arg;
  if (g.opt.fifo) set_fifo(10);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  struct series *s = &g.s[KIND_TIMER];
  const struct timespec nap = {.tv_sec = g.opt.sleep_ns / 1000000000,
                               .tv_nsec = g.opt.sleep_ns % 1000000000};
  while (atomic_load(&g.running)) {
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, NULL);
    put_timed(s, t0, now_ns(CLOCK_MONOTONIC) - t0);
  }
  return NULL;
}

static volatile uint64_t cpu_sink;

/* xorshift64: a dependency chain the compiler cannot shorten. */
static __attribute__((noinline)) uint64_t cpu_unit(uint64_t iters) {
  uint64_t x = 88172645463325252ull;
  for (uint64_t i = 0; i < iters; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  return x;
}

static int64_t time_unit(uint64_t iters) {
  int64_t t0 = now_ns(CLOCK_MONOTONIC);
  cpu_sink = cpu_unit(iters);
  return now_ns(CLOCK_MONOTONIC) - t0;
}

/* The iteration count of a unit of about `target` ns, from the fastest of
 * a few trials (the least disturbed); fixed for the whole run. */
static uint64_t calibrate(int64_t target) {
  uint64_t iters = 10000;
  while (time_unit(iters) < 2000000 && iters < (1ull << 40)) iters *= 2;
  for (int round = 0; round < 2; ++round) {
    int64_t best = INT64_MAX;
    for (int i = 0; i < 5; ++i) {
      int64_t t = time_unit(iters);
      if (t < best) best = t;
    }
    iters = (uint64_t)((double)iters * (double)target / (double)(best > 0 ? best : 1));
    if (iters == 0) iters = 1;
  }
  return iters;
}

static void *cpu_loop(void *arg) {
  (void)arg;
  struct series *s = &g.s[KIND_CPU];
  while (atomic_load(&g.running)) {
    int64_t t0 = now_ns(CLOCK_MONOTONIC);
    cpu_sink = cpu_unit(g.cpu_iters);
    put_timed(s, t0, now_ns(CLOCK_MONOTONIC) - t0);
  }
  return NULL;
}

/* ---- start, stop, files ---- */

static void free_series(void) {
  for (int k = 1; k < NKIND; ++k) {
    struct series *s = &g.s[k];
    if (s->mem) munmap(s->mem, s->cap * record_bytes(k));
    memset(s, 0, sizeof *s);
  }
}

static int parse_start(char *args, struct options *o, char *err, size_t errlen) {
  memset(o, 0, sizeof *o);
  o->port = 5201;
  snprintf(o->iface, sizeof o->iface, "eth0");
  o->gro_off = 1;
  o->tx = 1;
  o->max[KIND_RX] = 1000000;
  o->max[KIND_TIMER] = 200000;
  o->max[KIND_CPU] = 200000;
  o->sleep_ns = 10000000;
  o->unit_ns = 10000000;
  o->fifo = 1;
  int any = 0;
  for (char *w = strtok(args, " \t\r\n"); w; w = strtok(NULL, " \t\r\n")) {
    char *eq = strchr(w, '=');
    long long v = eq ? atoll(eq + 1) : 0;
    int k;
    for (k = 1; k < NKIND && strcmp(w, kind_name[k]) != 0; ++k) {
    }
    if (k < NKIND) {
      o->want[k] = any = 1;
    } else if (!strncmp(w, "port=", 5) && v > 0 && v < 65536) {
      o->port = (int)v;
    } else if (!strncmp(w, "iface=", 6) && strlen(eq + 1) < IF_NAMESIZE) {
      snprintf(o->iface, sizeof o->iface, "%s", eq + 1);
    } else if (!strcmp(w, "gro=off") || !strcmp(w, "gro=keep")) {
      o->gro_off = !strcmp(w, "gro=off");
    } else if (!strcmp(w, "tx=0") || !strcmp(w, "tx=1")) {
      o->tx = w[3] == '1';
    } else if (!strncmp(w, "rx_max=", 7) && v > 0) {
      o->max[KIND_RX] = (size_t)v;
    } else if (!strncmp(w, "timer_max=", 10) && v > 0) {
      o->max[KIND_TIMER] = (size_t)v;
    } else if (!strncmp(w, "cpu_max=", 8) && v > 0) {
      o->max[KIND_CPU] = (size_t)v;
    } else if (!strncmp(w, "sleep_us=", 9) && v > 0) {
      o->sleep_ns = v * 1000;
    } else if (!strncmp(w, "unit_us=", 8) && v > 0) {
      o->unit_ns = v * 1000;
    } else if (!strncmp(w, "fifo=", 5)) {
      o->fifo = v != 0;
    } else {
      snprintf(err, errlen, "unknown or bad start option '%s'", w);
      return -1;
    }
  }
  if (!any) {
    snprintf(err, errlen, "start needs at least one of rx, timer, cpu");
    return -1;
  }
  return 0;
}

static int do_start(char *args, char *reply, size_t len) {
  if (atomic_load(&g.running)) return snprintf(reply, len, "error already running"), -1;
  struct options o;
  if (parse_start(args, &o, reply + 6, len - 6) != 0) return memcpy(reply, "error ", 6), -1;
  free_series();
  g.opt = o;
  for (int k = 1; k < NKIND; ++k) {
    if (!o.want[k]) continue;
    struct series *s = &g.s[k];
    s->cap = o.max[k];
    /* Touched now, so no page fault lands inside a measurement. */
    s->mem = mmap(NULL, s->cap * record_bytes(k), PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (s->mem == MAP_FAILED) {
      s->mem = NULL;
      free_series();
      return snprintf(reply, len, "error cannot allocate %zu %s records", o.max[k], kind_name[k]), -1;
    }
  }
  g.s[KIND_TIMER].param[0] = (uint64_t)o.sleep_ns;
  g.s[KIND_TIMER].param[1] = (uint64_t)o.fifo;
  g.cpu_iters = 0;
  if (o.want[KIND_CPU]) {
    g.cpu_iters = calibrate(o.unit_ns);
    g.s[KIND_CPU].param[0] = g.cpu_iters;
    int64_t best = INT64_MAX;
    for (int i = 0; i < 3; ++i) {
      int64_t t = time_unit(g.cpu_iters);
      if (t < best) best = t;
    }
    g.s[KIND_CPU].param[1] = (uint64_t)best;
  }
  if (o.want[KIND_RX] && rx_open(reply + 6, len - 6) != 0) {
    free_series();
    return memcpy(reply, "error ", 6), -1;
  }
  clock_pair(&g.start_mono, &g.start_real);
  atomic_store(&g.running, 1);
  void *(*loops[NKIND])(void *) = {NULL, rx_loop, timer_loop, cpu_loop};
  for (int k = 1; k < NKIND; ++k) {
    g.active[k] = o.want[k] && pthread_create(&g.thread[k], NULL, loops[k], NULL) == 0;
  }
  return snprintf(reply, len, "ok started%s%s%s cpu_iters=%llu cpu_ns=%llu",
                  o.want[KIND_RX] ? " rx" : "", o.want[KIND_TIMER] ? " timer" : "",
                  o.want[KIND_CPU] ? " cpu" : "", (unsigned long long)g.cpu_iters,
                  (unsigned long long)g.s[KIND_CPU].param[1]),
         0;
}

static void put_u16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }
static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static int write_all(int fd, const void *data, size_t n) {
  const uint8_t *p = data;
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

static int write_series(int k) {
  struct series *s = &g.s[k];
  uint8_t h[HEADER_BYTES] = {0};
  uint64_t n = atomic_load(&s->count);
  memcpy(h, "AMBPROBE", 8);
  put_u16(h + 8, FILE_VERSION);
  put_u16(h + 10, (uint16_t)k);
  put_u32(h + 12, (uint32_t)record_bytes(k));
  put_u64(h + 16, n);
  put_u64(h + 24, s->lost_full);
  put_u64(h + 32, s->lost_kernel);
  put_u64(h + 40, (uint64_t)g.start_mono);
  put_u64(h + 48, (uint64_t)g.start_real);
  put_u64(h + 56, (uint64_t)g.stop_mono);
  put_u64(h + 64, (uint64_t)g.stop_real);
  for (int i = 0; i < 3; ++i) put_u64(h + 72 + 8 * i, s->param[i]);
  char path[300], tmp[310];
  snprintf(path, sizeof path, "%s/%s.bin", g.dir, kind_name[k]);
  snprintf(tmp, sizeof tmp, "%s.part", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return -1;
  int r = write_all(fd, h, sizeof h) | write_all(fd, s->mem, n * record_bytes(k));
  r |= close(fd);
  return r == 0 ? rename(tmp, path) : -1;
}

static int do_stop(char *reply, size_t len) {
  int was_running = atomic_exchange(&g.running, 0);
  if (was_running) {
    for (int k = 1; k < NKIND; ++k) {
      if (g.active[k]) pthread_join(g.thread[k], NULL);
      g.active[k] = 0;
    }
    clock_pair(&g.stop_mono, &g.stop_real);
    rx_close();
    mkdir(g.dir, 0755);
    for (int k = 1; k < NKIND; ++k) {
      char path[300];
      snprintf(path, sizeof path, "%s/%s.bin", g.dir, kind_name[k]);
      unlink(path);
      if (g.opt.want[k] && write_series(k) != 0) {
        return snprintf(reply, len, "error writing %s: %s", path, strerror(errno)), -1;
      }
    }
  }
  return snprintf(reply, len, "ok rx=%llu timer=%llu cpu=%llu rx_lost=%llu rx_kernel_drops=%llu",
                  (unsigned long long)g.s[KIND_RX].count, (unsigned long long)g.s[KIND_TIMER].count,
                  (unsigned long long)g.s[KIND_CPU].count,
                  (unsigned long long)g.s[KIND_RX].lost_full,
                  (unsigned long long)g.s[KIND_RX].lost_kernel),
         0;
}

/* ---- clock responder (UDP) ---- */

static void *clock_loop(void *arg) {
  int fd = (int)(intptr_t)arg;
  set_fifo(30);
  for (;;) {
    uint8_t req[64], rep[32];
    struct sockaddr_storage from;
    socklen_t flen = sizeof from;
    ssize_t n = recvfrom(fd, req, sizeof req, 0, (struct sockaddr *)&from, &flen);
    int64_t mono = now_ns(CLOCK_MONOTONIC);
    int64_t real = now_ns(CLOCK_REALTIME);
    uint32_t magic;
    if (n < 16) continue;
    memcpy(&magic, req, 4);
    if (magic != CLOCK_MAGIC) continue;
    memcpy(rep, req, 16);
    put_u64(rep + 16, (uint64_t)mono);
    put_u64(rep + 24, (uint64_t)real);
    sendto(fd, rep, sizeof rep, 0, (struct sockaddr *)&from, flen);
  }
  return NULL;
}

/* ---- control (TCP) ---- */

static void serve_get(int c, const char *what) {
  char path[512], line[64];
  int k;
  for (k = 1; k < NKIND && strcmp(what, kind_name[k]) != 0; ++k) {
  }
  if (what[0] == '/') snprintf(path, sizeof path, "%s", what);
  else snprintf(path, sizeof path, "%s/%s.bin", g.dir, k < NKIND ? kind_name[k] : "?");
  int fd = k < NKIND || what[0] == '/' ? open(path, O_RDONLY | O_CLOEXEC) : -1;
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    int n = snprintf(line, sizeof line, "error no file %.40s\n", what);
    write_all(c, line, (size_t)n);
    if (fd >= 0) close(fd);
    return;
  }
  int n = snprintf(line, sizeof line, "ok %lld\n", (long long)st.st_size);
  write_all(c, line, (size_t)n);
  off_t off = 0;
  while (off < st.st_size) {
    ssize_t w = sendfile(c, fd, &off, (size_t)(st.st_size - off));
    if (w <= 0 && errno != EINTR) break;
  }
  close(fd);
}

/* Returns 1 when the daemon should exit. */
static int handle(int c) {
  char line[512];
  size_t n = 0;
  struct pollfd pfd = {.fd = c, .events = POLLIN};
  while (n < sizeof line - 1 && poll(&pfd, 1, 5000) == 1) {
    ssize_t r = read(c, line + n, sizeof line - 1 - n);
    if (r <= 0) break;
    n += (size_t)r;
    if (memchr(line, '\n', n)) break;
  }
  line[n] = 0;
  char *nl = strpbrk(line, "\r\n");
  if (nl) *nl = 0;
  char reply[512];
  int quit = 0;
  pthread_mutex_lock(&g.lock);
  if (!strncmp(line, "start", 5) && (line[5] == ' ' || line[5] == 0)) {
    do_start(line + 5, reply, sizeof reply);
  } else if (!strcmp(line, "stop")) {
    do_stop(reply, sizeof reply);
  } else if (!strcmp(line, "status")) {
    snprintf(reply, sizeof reply, "ok running=%d rx=%llu timer=%llu cpu=%llu", atomic_load(&g.running),
             (unsigned long long)g.s[KIND_RX].count, (unsigned long long)g.s[KIND_TIMER].count,
             (unsigned long long)g.s[KIND_CPU].count);
  } else if (!strncmp(line, "get ", 4)) {
    serve_get(c, line + 4);
    pthread_mutex_unlock(&g.lock);
    return 0;
  } else if (!strcmp(line, "quit")) {
    do_stop(reply, sizeof reply);
    snprintf(reply, sizeof reply, "ok");
    quit = 1;
  } else {
    snprintf(reply, sizeof reply, "error unknown command '%.60s'", line);
  }
  pthread_mutex_unlock(&g.lock);
  size_t len = strlen(reply);
  reply[len++] = '\n';
  write_all(c, reply, len);
  return quit;
}

static int serve(int port) {
  int t = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  int one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (t < 0 || u < 0 || bind(t, (struct sockaddr *)&a, sizeof a) != 0 || listen(t, 4) != 0 ||
      bind(u, (struct sockaddr *)&a, sizeof a) != 0) {
    logf_("probe: cannot serve on port %d: %s", port, strerror(errno));
    return 1;
  }
  pthread_t clock_thread;
  if (pthread_create(&clock_thread, NULL, clock_loop, (void *)(intptr_t)u) != 0) return 1;
  logf_("probe: serving on port %d (tcp control, udp clock), files in %s", port, g.dir);
  for (;;) {
    int c = accept4(t, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0) continue;
    int quit = handle(c);
    close(c);
    if (quit) return 0;
  }
}

static int run_local(int seconds, int argc, char **argv) {
  char args[512] = "", reply[512];
  for (int i = 0; i < argc; ++i) {
    strncat(args, " ", sizeof args - strlen(args) - 1);
    strncat(args, argv[i], sizeof args - strlen(args) - 1);
  }
  int ok = do_start(args, reply, sizeof reply) == 0;
  printf("%s\n", reply);
  if (!ok) return 1;
  sleep((unsigned)seconds);
  ok = do_stop(reply, sizeof reply) == 0;
  printf("%s\n", reply);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  snprintf(g.dir, sizeof g.dir, "/tmp/probe");
  signal(SIGPIPE, SIG_IGN);
  if (argc >= 2 && !strcmp(argv[1], "serve")) {
    int port = 7700;
    for (int i = 2; i < argc; ++i) {
      if (!strncmp(argv[i], "port=", 5)) port = atoi(argv[i] + 5);
      else if (!strncmp(argv[i], "dir=", 4)) snprintf(g.dir, sizeof g.dir, "%s", argv[i] + 4);
    }
    mkdir(g.dir, 0755);
    return serve(port);
  }
  if (argc >= 3 && !strcmp(argv[1], "run")) {
    const char *dir = getenv("PROBE_DIR");
    if (dir) snprintf(g.dir, sizeof g.dir, "%s", dir);
    mkdir(g.dir, 0755);
    return run_local(atoi(argv[2]), argc - 3, argv + 3);
  }
  fprintf(stderr,
          "usage: probe serve [port=7700] [dir=/tmp/probe]\n"
          "       PROBE_DIR=DIR probe run SECONDS rx|timer|cpu... [port=5201] [iface=eth0] ...\n");
  return 2;
}
