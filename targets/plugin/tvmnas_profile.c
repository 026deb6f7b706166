/*
 * tvmnas block profiler: a QEMU 7.2 TCG plugin for single-core Cortex-M guests.
 *
 * Inside a window - from the entry of tvmnas_window_begin to the entry of
 * tvmnas_window_end - it counts how often each straight-line block runs, how
 * often it leaves through a taken branch (the next block is not its
 * fall-through address), and which instructions it holds (disassembly text).
 * Each entry of tvmnas_kernel_mark inside the window starts the next kernel
 * segment (0, 1, 2, ...); what runs between the window's start and the first
 * mark is the preamble segment (-1). Each window (0, 1, ... in run order) is
 * kept apart. Blocks are QEMU translation blocks split at marker addresses,
 * keyed by (pc, instruction count).
 *
 * Arguments (QEMU -plugin options): begin=ADDR,end=ADDR,out=FILE[,mark=ADDR]
 * [,skip=LO:HI ...] with ADDR in hex (0x...) or decimal; bit 0 (the Thumb bit)
 * is ignored. Blocks starting in a skip range [LO, HI) - interrupt handlers
 * whose work the measurement leaves out - are neither counted nor change the
 * taken/not-taken state of the interrupted block (up to 16 ranges).
 * With region=LO:HI, every data read from [LO, HI) (the firmware's flash:
 * code, literal pools and .rodata weights) is counted per block and segment,
 * one per memory access (an LDM of four registers is four reads); the profile
 * then adds "reads" records. Without it no memory callback is installed.
 * The profile is written to FILE when the window closes (cumulative over all
 * windows) and again at QEMU exit. Format, one record per line:
 *   tvmnas-profile 1
 *   windows W open O
 *   segment KEY WINDOW INDEX   (INDEX -1 = preamble, 0.. = kernels)
 *   block ID PC END N          (END = address after its last instruction)
 *   insn VADDR SIZE DISASSEMBLY
 *   count ID KEY EXECUTIONS TAKEN
 *   reads ID KEY REGION_READS  (only with region=, only where non-zero)
 *
 * Limit: a block counts as executed when it starts; a block abandoned midway
 * (a fault, or an I/O access that makes -icount retranslate it) is counted
 * whole, so the window must not touch device registers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qemu_plugin_api.h"

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

enum { MARK_BEGIN = 1, MARK_END = 2, MARK_KERNEL = 4 };
enum { SEG_NONE = -2, SEG_PREAMBLE = -1 };
#define NO_SLOT UINT32_MAX

typedef struct Block {
    uint64_t pc;
    uint64_t end;
    uint32_t n;
    uint32_t id;
    unsigned marker; /* MARK_* bits of the block's first instruction */
    int skip;        /* starts inside a skip range: never counted */
    uint64_t *vaddr;
    uint8_t *size;
    char **disas;
    int cached_seg; /* segment whose slot is cached below */
    uint32_t cached_slot;
    struct Block *hash_next;
} Block;

typedef struct {
    uint32_t block;
    int32_t seg;
    uint64_t exec;
    uint64_t taken;
    uint64_t region_reads;
} Slot;

typedef struct {
    uint32_t n;
    Block *blocks[];
} TbRec;

static uint64_t addr_begin = UINT64_MAX, addr_end = UINT64_MAX, addr_mark = UINT64_MAX;
static char *out_path;
#define MAX_SKIP 16
static uint64_t skip_lo[MAX_SKIP], skip_hi[MAX_SKIP];
static int n_skip;
static uint64_t region_lo, region_hi; /* region_hi == 0: no region counting */

#define BLOCK_HASH 65536u
static Block *block_hash[BLOCK_HASH];
static Block **blocks;
static uint32_t n_blocks, cap_blocks;

static Slot *slots;
static uint32_t n_slots, cap_slots;
static uint32_t *slot_hash; /* open addressing, stores slot index + 1 */
static uint32_t slot_hash_cap;

static int active;
static int cur_seg = SEG_NONE; /* key of the current (window, index) segment */
static int next_kernel;
static int32_t *seg_window, *seg_index;
static uint32_t n_segs, cap_segs;
static uint64_t windows;
static uint32_t prev_slot = NO_SLOT;
static uint64_t prev_end;

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);
    if (!q) {
        fprintf(stderr, "tvmnas_profile: out of memory\n");
        abort();
    }
    return q;
}

static uint32_t mix(uint64_t a, uint64_t b)
{
    uint64_t h = a * 0x9E3779B97F4A7C15ull ^ (b + 0x632BE59BD9B4E019ull);
    h ^= h >> 29;
    h *= 0xBF58476D1CE4E5B9ull;
    return (uint32_t)(h ^ (h >> 32));
}

static unsigned marker_at(uint64_t vaddr)
{
    unsigned m = 0;
    if (vaddr == addr_begin) {
        m |= MARK_BEGIN;
    }
    if (vaddr == addr_end) {
        m |= MARK_END;
    }
    if (vaddr == addr_mark) {
        m |= MARK_KERNEL;
    }
    return m;
}

/* Size of one Thumb instruction from its first halfword (QEMU 7.2 may report 4 for 16-bit ones). */
static uint8_t thumb_size(const struct qemu_plugin_insn *insn)
{
    const uint8_t *d = qemu_plugin_insn_data(insn);
    unsigned hw = d[0] | (d[1] << 8);
    return (hw >> 11) >= 0x1D ? 4 : 2;
}

/* Finds or creates the block for instructions [lo, hi) of a translation block. */
static Block *block_for(const struct qemu_plugin_tb *tb, size_t lo, size_t hi)
{
    uint64_t pc = qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, lo));
    uint32_t n = (uint32_t)(hi - lo);
    uint32_t h = mix(pc, n) & (BLOCK_HASH - 1);
    for (Block *b = block_hash[h]; b; b = b->hash_next) {
        if (b->pc == pc && b->n == n) {
            return b;
        }
    }
    Block *b = calloc(1, sizeof(*b));
    if (!b) {
        abort();
    }
    b->pc = pc;
    b->n = n;
    b->marker = marker_at(pc);
    for (int i = 0; i < n_skip; i++) {
        b->skip |= pc >= skip_lo[i] && pc < skip_hi[i];
    }
    b->vaddr = xrealloc(NULL, n * sizeof(*b->vaddr));
    b->size = xrealloc(NULL, n);
    b->disas = xrealloc(NULL, n * sizeof(*b->disas));
    for (size_t i = lo; i < hi; i++) {
        const struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        b->vaddr[i - lo] = qemu_plugin_insn_vaddr(insn);
        b->disas[i - lo] = qemu_plugin_insn_disas(insn);
        b->size[i - lo] = thumb_size(insn);
    }
    b->end = b->vaddr[n - 1] + b->size[n - 1];
    b->cached_seg = SEG_NONE;
    b->id = n_blocks;
    if (n_blocks == cap_blocks) {
        cap_blocks = cap_blocks ? 2 * cap_blocks : 1024;
        blocks = xrealloc(blocks, cap_blocks * sizeof(*blocks));
    }
    blocks[n_blocks++] = b;
    b->hash_next = block_hash[h];
    block_hash[h] = b;
    return b;
}

static void slot_hash_insert(uint32_t idx)
{
    uint32_t mask = slot_hash_cap - 1;
    uint32_t h = mix(slots[idx].block, (uint64_t)(int64_t)slots[idx].seg) & mask;
    while (slot_hash[h]) {
        h = (h + 1) & mask;
    }
    slot_hash[h] = idx + 1;
}

/* Index of the (block, segment) counter, created on first use. */
static uint32_t slot_for(Block *b, int seg)
{
    if (b->cached_seg == seg) {
        return b->cached_slot;
    }
    uint32_t idx = NO_SLOT;
    if (slot_hash_cap) {
        uint32_t mask = slot_hash_cap - 1;
        uint32_t h = mix(b->id, (uint64_t)(int64_t)seg) & mask;
        for (; slot_hash[h]; h = (h + 1) & mask) {
            Slot *s = &slots[slot_hash[h] - 1];
            if (s->block == b->id && s->seg == seg) {
                idx = slot_hash[h] - 1;
                break;
            }
        }
    }
    if (idx == NO_SLOT) {
        if (n_slots == cap_slots) {
            cap_slots = cap_slots ? 2 * cap_slots : 4096;
            slots = xrealloc(slots, cap_slots * sizeof(*slots));
        }
        idx = n_slots++;
        slots[idx] = (Slot){.block = b->id, .seg = seg, .exec = 0, .taken = 0, .region_reads = 0};
        if (2 * n_slots > slot_hash_cap) {
            free(slot_hash);
            slot_hash_cap = slot_hash_cap ? 2 * slot_hash_cap : 8192;
            slot_hash = calloc(slot_hash_cap, sizeof(*slot_hash));
            if (!slot_hash) {
                abort();
            }
            for (uint32_t i = 0; i < n_slots; i++) {
                slot_hash_insert(i);
            }
        } else {
            slot_hash_insert(idx);
        }
    }
    b->cached_seg = seg;
    b->cached_slot = idx;
    return idx;
}

static void write_profile(void)
{
    char *tmp = xrealloc(NULL, strlen(out_path) + 5);
    sprintf(tmp, "%s.tmp", out_path);
    FILE *f = fopen(tmp, "w");
    if (!f) {
        fprintf(stderr, "tvmnas_profile: cannot write %s\n", tmp);
        free(tmp);
        return;
    }
    fprintf(f, "tvmnas-profile 1\n");
    fprintf(f, "windows %" PRIu64 " open %d\n", windows, active);
    for (uint32_t i = 0; i < n_segs; i++) {
        fprintf(f, "segment %u %d %d\n", i, seg_window[i], seg_index[i]);
    }
    char *used = calloc(n_blocks ? n_blocks : 1, 1);
    for (uint32_t i = 0; i < n_slots; i++) {
        used[slots[i].block] = 1;
    }
    for (uint32_t i = 0; i < n_blocks; i++) {
        if (!used[i]) {
            continue;
        }
        Block *b = blocks[i];
        fprintf(f, "block %u 0x%" PRIx64 " 0x%" PRIx64 " %u\n", b->id, b->pc, b->end, b->n);
        for (uint32_t k = 0; k < b->n; k++) {
            const char *d = b->disas[k] ? b->disas[k] : "?";
            fprintf(f, "insn 0x%" PRIx64 " %u ", b->vaddr[k], b->size[k]);
            for (; *d; d++) {
                fputc(*d == '\n' || *d == '\r' ? ' ' : *d, f);
            }
            fputc('\n', f);
        }
    }
    for (uint32_t i = 0; i < n_slots; i++) {
        fprintf(f, "count %u %d %" PRIu64 " %" PRIu64 "\n", slots[i].block, slots[i].seg,
                slots[i].exec, slots[i].taken);
    }
    for (uint32_t i = 0; i < n_slots; i++) {
        if (slots[i].region_reads) {
            fprintf(f, "reads %u %d %" PRIu64 "\n", slots[i].block, slots[i].seg, slots[i].region_reads);
        }
    }
    free(used);
    fclose(f);
    rename(tmp, out_path);
    free(tmp);
}

/* Opens the next segment of the current window; returns its key. */
static int new_segment(int index)
{
    if (n_segs == cap_segs) {
        cap_segs = cap_segs ? 2 * cap_segs : 256;
        seg_window = xrealloc(seg_window, cap_segs * sizeof(*seg_window));
        seg_index = xrealloc(seg_index, cap_segs * sizeof(*seg_index));
    }
    seg_window[n_segs] = (int32_t)windows;
    seg_index[n_segs] = index;
    return (int)n_segs++;
}

static void vcpu_tb_exec(unsigned int vcpu_index, void *udata)
{
    TbRec *tb = udata;
    (void)vcpu_index;
    for (uint32_t i = 0; i < tb->n; i++) {
        Block *b = tb->blocks[i];
        if (b->skip) {
            continue;
        }
        if (prev_slot != NO_SLOT) {
            if (b->pc != prev_end) {
                slots[prev_slot].taken++;
            }
            prev_slot = NO_SLOT;
        }
        if (b->marker) {
            if ((b->marker & MARK_BEGIN) && !active) {
                active = 1;
                next_kernel = 0;
                cur_seg = new_segment(SEG_PREAMBLE);
            }
            if ((b->marker & MARK_KERNEL) && active) {
                cur_seg = new_segment(next_kernel++);
            }
            if ((b->marker & MARK_END) && active) {
                active = 0;
                cur_seg = SEG_NONE;
                windows++;
                write_profile();
            }
        }
        if (active) {
            uint32_t s = slot_for(b, cur_seg);
            slots[s].exec++;
            prev_slot = s;
            prev_end = b->end;
        }
    }
}

/* A data access by an instruction of block `udata`: a read in the region is counted. (QEMU 7.2
 * delivers no loads to a callback registered for reads alone, so it registers for both.) */
static void vcpu_mem(unsigned int vcpu_index, qemu_plugin_meminfo_t info, uint64_t vaddr, void *udata)
{
    (void)vcpu_index;
    Block *b = udata;
    if (active && !qemu_plugin_mem_is_store(info) && vaddr >= region_lo && vaddr < region_hi) {
        slots[slot_for(b, cur_seg)].region_reads++;
    }
}

static void vcpu_tb_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    if (n == 0) {
        return;
    }
    size_t cuts = 1;
    for (size_t i = 1; i < n; i++) {
        cuts += marker_at(qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i))) != 0;
    }
    TbRec *rec = xrealloc(NULL, sizeof(*rec) + cuts * sizeof(Block *));
    rec->n = 0;
    size_t lo = 0;
    for (size_t i = 1; i <= n; i++) {
        if (i == n || marker_at(qemu_plugin_insn_vaddr(qemu_plugin_tb_get_insn(tb, i)))) {
            Block *b = block_for(tb, lo, i);
            rec->blocks[rec->n++] = b;
            if (region_hi && !b->skip) {
                for (size_t j = lo; j < i; j++) {
                    qemu_plugin_register_vcpu_mem_cb(qemu_plugin_tb_get_insn(tb, j), vcpu_mem,
                                                     QEMU_PLUGIN_CB_NO_REGS, QEMU_PLUGIN_MEM_RW, b);
                }
            }
            lo = i;
        }
    }
    qemu_plugin_register_vcpu_tb_exec_cb(tb, vcpu_tb_exec, QEMU_PLUGIN_CB_NO_REGS, rec);
}

static void plugin_exit(qemu_plugin_id_t id, void *udata)
{
    (void)id;
    (void)udata;
    write_profile();
}

static int parse_addr(const char *s, uint64_t *out)
{
    char *e;
    unsigned long long v = strtoull(s, &e, 0);
    if (*s == '\0' || *e != '\0') {
        return -1;
    }
    *out = (uint64_t)v & ~1ull;
    return 0;
}

/* Parses "LO:HI" into [lo, hi), Thumb bits cleared. */
static int parse_range(const char *s, uint64_t *lo, uint64_t *hi)
{
    char *e;
    unsigned long long a = strtoull(s, &e, 0);
    if (e == s || *e != ':') {
        return -1;
    }
    const char *t = e + 1;
    unsigned long long b = strtoull(t, &e, 0);
    if (e == t || *e != '\0' || b <= a) {
        return -1;
    }
    *lo = (uint64_t)a & ~1ull;
    *hi = (uint64_t)b;
    return 0;
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info,
                                           int argc, char **argv)
{
    (void)info;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        if (!eq) {
            fprintf(stderr, "tvmnas_profile: argument '%s' is not key=value\n", a);
            return -1;
        }
        size_t k = (size_t)(eq - a);
        const char *v = eq + 1;
        int bad = 0;
        if (k == 5 && !strncmp(a, "begin", 5)) {
            bad = parse_addr(v, &addr_begin);
        } else if (k == 3 && !strncmp(a, "end", 3)) {
            bad = parse_addr(v, &addr_end);
        } else if (k == 4 && !strncmp(a, "mark", 4)) {
            bad = parse_addr(v, &addr_mark);
        } else if (k == 4 && !strncmp(a, "skip", 4)) {
            bad = n_skip == MAX_SKIP || parse_range(v, &skip_lo[n_skip], &skip_hi[n_skip]);
            n_skip += !bad;
        } else if (k == 6 && !strncmp(a, "region", 6)) {
            bad = parse_range(v, &region_lo, &region_hi);
        } else if (k == 3 && !strncmp(a, "out", 3)) {
            out_path = strdup(v);
        } else {
            fprintf(stderr, "tvmnas_profile: unknown argument '%s'\n", a);
            return -1;
        }
        if (bad) {
            fprintf(stderr, "tvmnas_profile: bad address or range in '%s'\n", a);
            return -1;
        }
    }
    if (addr_begin == UINT64_MAX || addr_end == UINT64_MAX || !out_path) {
        fprintf(stderr, "tvmnas_profile: begin=, end= and out= are required\n");
        return -1;
    }
    qemu_plugin_register_vcpu_tb_trans_cb(id, vcpu_tb_trans);
    qemu_plugin_register_atexit_cb(id, plugin_exit, NULL);
    return 0;
}
