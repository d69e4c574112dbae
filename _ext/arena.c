/* Arenas: process-wide memory for shared immortal objects, and when it is given back.
 *
 * Memory. An arena is a list of blocks in memory mapped with mmap (never any
 * interpreter's obmalloc): slots of 4-64 KiB cut from shared 2 MiB slabs for small arenas
 * (slot_new), then blocks mapped on their own, aligned to SS_CHUNK (1 MiB) and a multiple
 * of it in size. Blocks grow with the arena and are sized from what the share() being
 * filled expects (block_new says how); small objects are bump-allocated in the current
 * block, big ones get a block of their own.
 * Each block starts with a header and an object-start bitmap (one bit per 16-byte grain),
 * so ss_is_shared() is exact: only the address of an object this arena built passes, not
 * a pointer into a bytes payload or a GC header. A radix table maps every chunk of the
 * address space to its block; readers use atomic loads and no lock. Entries are cleared
 * before a block is unmapped. Leaves of the radix table are never freed.
 *
 * Lifetime (docs/shared-memory.md has the rule in full). An arena is freed when
 *   refs == 0  (no Arena handle in any interpreter, no in-flight item: ss_arena_incref)
 *   and holders is empty (no interpreter that could reach its objects is still alive: an
 *       interpreter is removed only by ss_interpreter_destroyed(), after it was destroyed)
 * and it is not the default arena. refs reaching 0 also closes the arena for good.
 * Arenas that reference objects of another arena hold a struct reference on it.
 *
 * Locks. g_lock (a pthread mutex, never held while calling into Python or waiting for a
 * GIL) guards the live list, refs, holders, stats, the radix leaves and the token table.
 * Each arena has a fill lock held for the whole of one share() into it; a thread that has
 * to wait for it waits with its GIL released. Order: fill lock, then g_lock.
 */
#include "subsandbox.h"
#include "sync.h"
#include "pyversion.h"
#include "pyinternal.h"

#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define SS_CHUNK_SHIFT 20
#define SS_CHUNK ((size_t)1 << SS_CHUNK_SHIFT)
#define SS_GRAIN 16
#define SS_BIG_OBJECT (SS_CHUNK / 4)      /* bigger allocations get a block of their own */
#define SS_HUGE ((size_t)2 << 20)          /* a transparent huge page (x86-64, arm64 4K) */
#define SS_BLOCK_MAX ((size_t)64 << 20)    /* growth stops at blocks of this size */
/* A small arena's blocks are slots of slab chunks (see slot_new): 4 KiB to 64 KiB. */
#define SS_SLOT_MIN_SHIFT 12
#define SS_SLOT_MAX_SHIFT 16
#define SS_SLOT_CLASSES (SS_SLOT_MAX_SHIFT - SS_SLOT_MIN_SHIFT + 1)
#define SS_SLOT_MAX ((size_t)1 << SS_SLOT_MAX_SHIFT)
#define SS_SLOT_WARM_BYTES ((size_t)1 << 20)   /* free slots kept resident, all classes */
#define SS_SLAB SS_HUGE                         /* a slab chunk */
#define SS_PAGE 4096
/* Fresh slots are faulted in this much at a time (slot_new). */
#define SS_SLOT_POPULATE ((size_t)64 << 10)
/* A radix entry of a slab chunk: the chunk's address | slot shift << 1 | this bit. */
#define RADIX_SLAB_TAG ((uintptr_t)1)

/* The radix table covers 47-bit user addresses: 27 bits of chunk number, split 13 + 14. */
#define RADIX_ADDR_BITS 47
#define RADIX_LEAF_BITS 14
#define RADIX_TOP_BITS (RADIX_ADDR_BITS - SS_CHUNK_SHIFT - RADIX_LEAF_BITS)

typedef struct ss_block {
    struct ss_block *next;      /* the arena's blocks, newest first */
    ss_arena *arena;
    size_t size;                /* bytes mapped: a multiple of SS_CHUNK, or a slot's size */
    int slot_class;             /* a slot of a slab chunk (slot_new): 1 + its size class;
                                 * 0: a mapping of its own */
    char *data;                 /* first allocatable byte */
    char *bump;                 /* next free byte (guarded by the arena's fill lock) */
    char *populated;            /* pages below it are faulted in (guarded by the fill lock) */
    size_t fault_step;          /* how much populate_to() faults in at once; 0: lazily */
    char *end;
    uint8_t bitmap[];           /* bit i: an object starts at base + 16 * i */
} ss_block;

typedef struct {
    Py_hash_t hash;             /* the str's hash, kept here to probe without touching it */
    PyObject *s;
} str_slot;

struct ss_arena {
    uint64_t id;
    int is_default;
    pthread_mutex_t fill_lock;
    unsigned long fill_owner;   /* thread filling it now, 0 when none (atomic) */
    /* guarded by the fill lock */
    ss_block *blocks;
    ss_block *cur;
    size_t nbytes;              /* bytes handed out (atomic reads) */
    str_slot *str_table;        /* memo of strings by value; s is NULL, STR_TOMB or a str */
    size_t str_mask;
    size_t str_used;            /* live + tombstones */
    size_t str_tombs;           /* tombstones (left by aborted calls) */
    int str_table_in_arena;     /* the table is the first, smallest one, in a block of
                                 * the arena (str_table_resize): never freed on its own */
    size_t str_grown_in_place;  /* doublings done by str_table_double_in_place (stats) */
    ss_arena **deps;            /* arenas whose objects ours reference (one ref each) */
    Py_ssize_t ndeps, capdeps;
    struct ss_filler *filler;   /* the one filler while the fill lock is held (its memory:
                                 * filler_mem below; no allocation per share()) */
    /* guarded by g_lock */
    Py_ssize_t refs;
    int closed;                 /* set once, never cleared: atomic stores (read unlocked
                                 * by ss_filler_begin's first check) */
    int forked_mid_fill;        /* in a forked child: a thread of the parent was filling
                                 * it at the fork (ss_arena_fork_done) */
    int64_t *holders;
    Py_ssize_t nholders, capholders;
    size_t reserved;            /* bytes mapped */
    struct ss_arena *next, *prev;   /* live list (not the default arena) */
};

struct ss_filler {
    ss_arena *a;
    ss_block *mark_blocks;
    ss_block *mark_cur;
    char *mark_bump;
    size_t mark_nbytes;
    Py_ssize_t mark_ndeps;
    /* Where ss_filler_str_find() stopped: the empty slot a string of that hash goes to,
     * valid while the table is the same and unchanged (ss_filler_str_add uses it). */
    size_t str_hint;
    Py_hash_t str_hint_hash;
    size_t str_hint_used;
    str_slot *str_hint_table;
    size_t expect;              /* bytes this share() expects to allocate (a hint) */
};

#define STR_TOMB ((PyObject *)1)
#define STR_TABLE_FIRST 64              /* slots of a memo's first table */

static void str_table_free(str_slot *t, size_t cap);

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static ss_block **g_radix[(size_t)1 << RADIX_TOP_BITS];
static ss_arena g_live = {.next = &g_live, .prev = &g_live};   /* list head */
static ss_arena *g_default;
static uint64_t g_next_id = 1;
static size_t g_reserved;           /* bytes of blocks of all arenas, the default one included */
static Py_ssize_t g_nblocks;
/* Slabs (guarded by g_lock): 2 MiB chunks cut into slots of one size class each, never
 * unmapped. Per class: */
typedef struct {
    char *next, *end;           /* slots of the newest chunk never handed out */
    char *populated;            /* pages of the newest chunk below it are faulted in */
    uintptr_t *free;            /* freed slots, zeroed; low bit set: cold (their pages
                                 * were given back with MADV_DONTNEED) */
    size_t nfree, capfree;
} slot_class;
static slot_class g_slots[SS_SLOT_CLASSES];
static size_t g_warm_free_bytes;        /* resident free slots, all classes */
static size_t g_slab_bytes;             /* bytes mapped for slabs */
static int g_rt_ready;

/* ---- radix table ---------------------------------------------------------------------- */

static inline ss_block *
radix_get(uintptr_t addr)
{
    if (addr >> RADIX_ADDR_BITS) {
        return NULL;
    }
    uintptr_t chunk = addr >> SS_CHUNK_SHIFT;
    ss_block **leaf = __atomic_load_n(&g_radix[chunk >> RADIX_LEAF_BITS],
                                      __ATOMIC_ACQUIRE);
    if (leaf == NULL) {
        return NULL;
    }
    return __atomic_load_n(&leaf[chunk & (((uintptr_t)1 << RADIX_LEAF_BITS) - 1)],
                           __ATOMIC_ACQUIRE);
}

/* Under g_lock. */
static int
radix_set(char *base, size_t size, ss_block *b)
{
    uintptr_t first = (uintptr_t)base >> SS_CHUNK_SHIFT;
    uintptr_t last = ((uintptr_t)base + size - 1) >> SS_CHUNK_SHIFT;
    if (((uintptr_t)base + size - 1) >> RADIX_ADDR_BITS) {
        return -1;
    }
    for (uintptr_t c = first; c <= last; c++) {
        ss_block **leaf = g_radix[c >> RADIX_LEAF_BITS];
        if (leaf == NULL) {
            if (b == NULL) {
                continue;
            }
            leaf = PyMem_RawCalloc((size_t)1 << RADIX_LEAF_BITS, sizeof(ss_block *));
            if (leaf == NULL) {
                return -1;
            }
            __atomic_store_n(&g_radix[c >> RADIX_LEAF_BITS], leaf, __ATOMIC_RELEASE);
        }
        __atomic_store_n(&leaf[c & (((uintptr_t)1 << RADIX_LEAF_BITS) - 1)], b,
                         __ATOMIC_RELEASE);
    }
    return 0;
}

/* The block holding the object that starts at `op`, or NULL. In a slab chunk the block
 * is the slot around `op`; a slot that belongs to no arena is all zero (header and
 * bitmap), so nothing in it passes. */
static inline ss_block *
block_of_object(const void *op)
{
    uintptr_t e = (uintptr_t)radix_get((uintptr_t)op);
    if (e == 0) {
        return NULL;
    }
    ss_block *b = (ss_block *)e;
    if (e & RADIX_SLAB_TAG) {
        uintptr_t slot = (uintptr_t)1 << ((e >> 1) & 31);
        b = (ss_block *)((uintptr_t)op & ~(slot - 1));
    }
    const char *p = (const char *)op;
    if (p < b->data || p >= b->end || ((uintptr_t)p & (SS_GRAIN - 1))) {
        return NULL;
    }
    size_t bit = (size_t)(p - (const char *)b) / SS_GRAIN;
    uint8_t byte = __atomic_load_n(&b->bitmap[bit >> 3], __ATOMIC_ACQUIRE);
    return (byte & (1u << (bit & 7))) ? b : NULL;
}

/* ---- blocks --------------------------------------------------------------------------- */

static size_t
block_header_size(size_t size)
{
    size_t h = offsetof(ss_block, bitmap) + size / SS_GRAIN / 8;
    return (h + SS_GRAIN - 1) & ~(size_t)(SS_GRAIN - 1);
}

static void *
map_aligned(size_t size, size_t align)
{
    size_t len = size + align;
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
    uintptr_t start = ((uintptr_t)p + align - 1) & ~(uintptr_t)(align - 1);
    size_t head = start - (uintptr_t)p;
    size_t tail = len - head - size;
    if (head) {
        munmap(p, head);
    }
    if (tail) {
        munmap((char *)start + size, tail);
    }
    return (void *)start;
}

/* Fault in the pages of [b->populated, up to) and a little beyond, with one call instead of
 * one page fault per 4 KiB page while objects are written there (page faults were a
 * quarter of share()'s time). Failure (a kernel without MADV_POPULATE_WRITE, 5.14+) only
 * loses the speed-up: the pages then fault in one by one. Under the fill lock. */
static void
populate_to(ss_block *b, const char *up_to)
{
    size_t step = b->fault_step;
    size_t want = (size_t)(up_to - (char *)b);
    char *to = (char *)b + (want + step - 1) / step * step;
    if (to > b->end) {
        to = b->end;
    }
#ifdef MADV_POPULATE_WRITE
    if (to > b->populated) {
        (void)madvise(b->populated, (size_t)(to - b->populated), MADV_POPULATE_WRITE);
    }
#endif
    b->populated = to;
}

/* What the share() filling `a` still expects to allocate (ss_filler_expect), 0 if unknown.
 * Under the fill lock. */
static size_t
expected_left(ss_arena *a)
{
    ss_filler *f = a->filler;
    size_t done = a->nbytes - f->mark_nbytes;
    return f->expect > done ? f->expect - done : 0;
}

/* ---- slots: the blocks of a small arena ---------------------------------------------
 *
 * Mapping a block of its own for every arena cost most of a small share(): mmap, the
 * munmap calls that align it, a page table, and a page fault per page touched (perf: 70%
 * of Arena().share() of 1 KB, ~7 us). So a small arena's blocks are slots of process-wide
 * slab chunks: 2 MiB, aligned, each cut into slots of one size (4 KiB to 64 KiB, a power
 * of two). The chunk's radix entries are tagged (RADIX_SLAB_TAG, with the slot size), so
 * block_of_object() finds the slot around an address. A chunk's 4 KiB pages are faulted
 * in SS_SLOT_POPULATE at a time, for the slot taken and the next ones of its size (see
 * slab_chunk_new for why not a huge page). Fresh memory still costs its zeroing by the
 * kernel, so an arena's first slot is
 * sized to what the share() about to fill it expects (ss_filler_expect), and an arena
 * that outgrows it takes a slot twice as big, up to 64 KiB, then mapped blocks.
 *
 * A slot is given back only by arena_free(), when the arena's memory is unreachable by
 * the lifetime rule. It is zeroed first (header, bitmap and every byte handed out), so
 * that no address in it passes block_of_object() any more and the next arena gets memory
 * as fresh as mmap's; then it is kept for reuse. Up to SS_SLOT_WARM_BYTES of free slots
 * stay resident (reused with no fault); beyond that a freed slot's pages are given back
 * to the system (MADV_DONTNEED: they read as zero again). Slab chunks are never unmapped:
 * what stays is address space, page tables and at most SS_SLOT_WARM_BYTES of free slots. */

/* Under g_lock: map a new slab chunk for slots of class k. -1 when out of memory. */
static int
slab_chunk_new(int k)
{
    char *base = map_aligned(SS_SLAB, SS_HUGE);
    if (base == NULL) {
        return -1;
    }
    uintptr_t tag = ((uintptr_t)(SS_SLOT_MIN_SHIFT + k) << 1) | RADIX_SLAB_TAG;
    if (radix_set(base, SS_SLAB, (ss_block *)((uintptr_t)base | tag)) < 0) {
        radix_set(base, SS_SLAB, NULL);
        munmap(base, SS_SLAB);
        return -1;
    }
    /* Pages: 4 KiB, faulted in as slots are taken (slot_new). Huge pages were tried: one
     * fault for the chunk, but the kernel's zeroing of 2 MiB (clear_page_erms, 57% of
     * Arena().share() of 1 KB in perf on this VM) cost as much as 4 KiB faults, and a
     * process with one small arena would hold 2 MiB. */

    g_slots[k].next = base;
    g_slots[k].end = base + SS_SLAB;
    g_slots[k].populated = base;
    g_slab_bytes += SS_SLAB;
    return 0;
}

/* The size class of the smallest slot with room for `payload` bytes after its header;
 * -1 when no slot is big enough. */
static int
slot_class_for(size_t payload)
{
    for (int k = 0; k < SS_SLOT_CLASSES; k++) {
        size_t size = (size_t)1 << (SS_SLOT_MIN_SHIFT + k);
        if (block_header_size(size) + payload <= size) {
            return k;
        }
    }
    return -1;
}

/* A zeroed slot of class k as a new block of `a`. The caller holds the fill lock. NULL +
 * MemoryError. */
static ss_block *
slot_new(ss_arena *a, int k)
{
    size_t size = (size_t)1 << (SS_SLOT_MIN_SHIFT + k);
    slot_class *c = &g_slots[k];
    char *base = NULL;
    char *populate_from = NULL, *populate_to = NULL;   /* a run of fresh chunk pages */
    pthread_mutex_lock(&g_lock);
    int cold = 0;               /* a freed slot whose pages were given back */
    if (c->nfree > 0) {
        uintptr_t e = c->free[--c->nfree];
        if (e & 1) {
            cold = 1;
        }
        else {
            g_warm_free_bytes -= size;
        }
        base = (char *)(e & ~(uintptr_t)1);
    }
    else if (c->next != c->end || slab_chunk_new(k) == 0) {
        base = c->next;
        c->next += size;
        if (c->next > c->populated) {
            /* Fault in the chunk's next pages for this slot and the next ones with one
             * call: a 4 KiB page fault costs ~1.7 us on this VM (the memory cgroup's
             * charge, page-table locks), MADV_POPULATE_WRITE ~1.2 us per page in bulk. */
            populate_from = c->populated;
            populate_to = base + (size > SS_SLOT_POPULATE ? size : SS_SLOT_POPULATE);
            if (populate_to > c->end) {
                populate_to = c->end;
            }
            c->populated = populate_to;
        }
    }
    if (base != NULL) {
        a->reserved += size;
        g_reserved += size;
        g_nblocks++;
    }
    pthread_mutex_unlock(&g_lock);
    if (base == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
#ifdef MADV_POPULATE_WRITE
    /* Outside g_lock: another thread may already write into a slot of this run, which
     * is harmless (populating never changes a page that is already there). Failure (a
     * kernel before 5.14) only loses the speed-up: the pages fault in one by one. */
    if (populate_from != NULL) {
        (void)madvise(populate_from, (size_t)(populate_to - populate_from),
                      MADV_POPULATE_WRITE);
    }
    else if (cold && size > (size_t)SS_PAGE) {
        /* Fault in what this share() expects to use, not a fault per page. */
        size_t want = block_header_size(size) + expected_left(a);
        want = want < size ? (want + SS_PAGE - 1) & ~(size_t)(SS_PAGE - 1) : size;
        (void)madvise(base, want, MADV_POPULATE_WRITE);
    }
#else
    (void)populate_from;
    (void)populate_to;
    (void)cold;
#endif
    ss_block *b = (ss_block *)base;
    b->arena = a;
    b->size = size;
    b->slot_class = k + 1;
    b->data = base + block_header_size(size);
    b->bump = b->data;
    b->end = base + size;
    b->fault_step = 0;
    b->populated = b->end;
    b->next = a->blocks;
    a->blocks = b;
    return b;
}

/* Give a slot of a dead arena back to its class (see above). No lock held. */
static void
slot_free(ss_block *b)
{
    ss_arena *a = b->arena;
    int k = b->slot_class - 1;
    size_t size = b->size;
    size_t used = (size_t)(b->bump - (char *)b);
    slot_class *c = &g_slots[k];
    int warm;
    pthread_mutex_lock(&g_lock);
    a->reserved -= size;
    g_reserved -= size;
    g_nblocks--;
    warm = g_warm_free_bytes + size <= SS_SLOT_WARM_BYTES;
    if (warm) {
        g_warm_free_bytes += size;  /* counted now: two frees cannot both pass the bound */
    }
    pthread_mutex_unlock(&g_lock);
    if (!warm && madvise((void *)b, size, MADV_DONTNEED) != 0) {
        warm = -1;                  /* kept resident after all: zeroed by hand */
    }
    if (warm) {
        memset((void *)b, 0, used);
    }
    pthread_mutex_lock(&g_lock);
    if (warm < 0) {
        warm = 1;
        g_warm_free_bytes += size;
    }
    if (c->nfree == c->capfree) {
        size_t cap = c->capfree ? c->capfree * 2 : 64;
        uintptr_t *t = PyMem_RawRealloc(c->free, cap * sizeof(uintptr_t));
        if (t == NULL) {
            /* No room to remember it: the slot stays zeroed and unused (address space
             * lost, nothing unsound). */
            if (warm) {
                g_warm_free_bytes -= size;
            }
            pthread_mutex_unlock(&g_lock);
            return;
        }
        c->free = t;
        c->capfree = cap;
    }
    c->free[c->nfree++] = (uintptr_t)b | (warm ? 0 : 1);
    pthread_mutex_unlock(&g_lock);
}

/* A new block with room for `payload` bytes, registered in the radix table. The caller
 * holds the fill lock. NULL + MemoryError.
 *
 * Sizes: a block is as big as the share() being filled still expects (ss_filler_expect)
 * and as all of the arena's blocks so far (so that blocks grow geometrically), and at
 * least `payload`. Up to 64 KiB it is a slot (see slot_new above). Bigger ones are mapped:
 * a multiple of 2 MiB up to 64 MiB, aligned to 2 MiB, advised as transparent huge pages,
 * and faulted in 2 MiB at a time as the bump pointer reaches them (populate_to): one
 * fault per 2 MiB instead of 512 (share() of a 1 MB table: -15%), and RSS follows what is
 * used, never a whole 64 MiB block at once. An object of SS_BIG_OBJECT bytes or more gets
 * a mapped block of its own, faulted in whole.
 *
 * Fresh memory costs share() dearly on a VM whose host takes back the guest's free
 * memory (virtio-balloon free page reporting): a page the host took back must be backed
 * again. On the benchmarks' VM, MADV_POPULATE_WRITE took ~0.3 ms per MiB of 4 KiB pages
 * while the guest had free memory the host still backed (about 1 GiB), 2.2 ms per MiB
 * beyond; huge pages 1.1-2.4 ms per MiB in a new process (they need 2 MiB free in one
 * piece, which the host has more often taken back), 0.045 ms when the same pages were
 * reused at once. 4 KiB pages were tried (session 18): share() of new 1 KB tables into
 * the default arena took a steady 5.5-6 us, against 3.8-4.3 us or 17-20 us with huge
 * pages, process by process; 100 MB values took the same time either way (all of their
 * memory new to the host); and reading a shared 1 MB table got 3-7% slower (TLB
 * misses), and reading is what sandboxes do again and again. Kept: huge pages. */
static ss_block *
block_new(ss_arena *a, size_t payload)
{
    size_t want = expected_left(a);
    if (want < a->reserved) {
        want = a->reserved;
    }
    if (want < payload) {
        want = payload;
    }
    if (payload < SS_BIG_OBJECT) {
        int k = slot_class_for(want);
        if (k >= 0) {
            return slot_new(a, k);
        }
    }
    size_t size, align = SS_HUGE, step = SS_HUGE;
    if (payload >= SS_BIG_OBJECT) {
        size = SS_CHUNK;
        align = SS_CHUNK;
        while (block_header_size(size) + payload > size) {
            size += SS_CHUNK;
        }
        step = size;
    }
    else {
        size_t grown = want < SS_BLOCK_MAX ? want : SS_BLOCK_MAX;
        size = (grown + SS_HUGE - 1) & ~(SS_HUGE - 1);
    }
    char *base = map_aligned(size, align);
    if (base == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    if (align == SS_HUGE) {
        (void)madvise(base, size, MADV_HUGEPAGE);   /* a hint: failure changes nothing */
    }
#endif
    ss_block *b = (ss_block *)base;
    b->arena = a;
    b->size = size;
    b->data = base + block_header_size(size);
    b->bump = b->data;
    b->end = base + size;
    b->fault_step = step;
    if (step == 0) {
        b->populated = b->end;      /* faults in lazily, page by page */
    }
    else {
        b->populated = base;
        populate_to(b, b->data + payload);
    }
    pthread_mutex_lock(&g_lock);
    int rc = radix_set(base, size, b);
    if (rc == 0) {
        a->reserved += size;
        g_reserved += size;
        g_nblocks++;
    }
    pthread_mutex_unlock(&g_lock);
    if (rc < 0) {
        pthread_mutex_lock(&g_lock);
        radix_set(base, size, NULL);
        pthread_mutex_unlock(&g_lock);
        munmap(base, size);
        PyErr_NoMemory();
        return NULL;
    }
    b->next = a->blocks;
    a->blocks = b;
    return b;
}

static void
block_free(ss_block *b)
{
    if (b->slot_class) {
        slot_free(b);
        return;
    }
    ss_arena *a = b->arena;
    size_t size = b->size;
    pthread_mutex_lock(&g_lock);
    radix_set((char *)b, size, NULL);
    a->reserved -= size;
    g_reserved -= size;
    g_nblocks--;
    pthread_mutex_unlock(&g_lock);
    munmap((void *)b, size);
}

/* ---- arenas --------------------------------------------------------------------------- */

static ss_arena *
arena_new(int is_default)
{
    ss_arena *a = PyMem_RawCalloc(1, sizeof(ss_arena) + sizeof(ss_filler));
    if (a == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    a->filler = (ss_filler *)(a + 1);
    int rc = pthread_mutex_init(&a->fill_lock, NULL);
    if (rc != 0) {
        PyMem_RawFree(a);
        ss_set_os_error(rc, "cannot create the fill lock of an arena");
        return NULL;
    }
    a->is_default = is_default;
    a->refs = 1;
    pthread_mutex_lock(&g_lock);
    a->id = g_next_id++;
    if (!is_default) {
        a->next = g_live.next;
        a->prev = &g_live;
        g_live.next->prev = a;
        g_live.next = a;
    }
    pthread_mutex_unlock(&g_lock);
    return a;
}

/* Under g_lock: can `a` be freed now? If so, unlink it (the caller frees it). */
static int
arena_unlink_if_dead(ss_arena *a)
{
    if (a->is_default || a->refs != 0 || a->nholders != 0 || a->next == NULL) {
        return 0;
    }
    a->prev->next = a->next;
    a->next->prev = a->prev;
    a->next = a->prev = NULL;
    return 1;
}

/* Free an unlinked arena; no lock held. Dependencies are released after. */
static void
arena_free(ss_arena *a)
{
    ss_block *b = a->blocks;
    while (b != NULL) {
        ss_block *next = b->next;
        block_free(b);
        b = next;
    }
    if (!a->str_table_in_arena) {
        str_table_free(a->str_table, a->str_table ? a->str_mask + 1 : 0);
    }
    PyMem_RawFree(a->holders);
    ss_arena **deps = a->deps;
    Py_ssize_t ndeps = a->ndeps;
    pthread_mutex_destroy(&a->fill_lock);
    PyMem_RawFree(a);
    for (Py_ssize_t i = 0; i < ndeps; i++) {
        ss_arena_decref(deps[i]);
    }
    PyMem_RawFree(deps);
}

/* Fork (lifecycle.c): g_lock is held across fork() so the child's copy of the arena
 * tables is consistent. A leaf lock: taken with the GIL held.
 *
 * Fill locks are not taken: a thread holding one may be waiting for the GIL of the thread
 * that forks. So a thread of the parent may be inside a share() at the fork (or holding
 * the fill lock on its way in), and the child has a copy of that arena in the middle of
 * a fill (a bump pointer, a memo being rehashed) and of its fill lock, locked by a thread
 * the child does not have. The child cannot finish or undo that fill, so it closes such
 * an arena: share() into it raises instead of waiting for ever, and what was published
 * before stays readable. The default arena is replaced by a new one in the child (made
 * at its next use), so that plain share() goes on working; the old one stays mapped,
 * like every default arena, and its objects stay readable. */
void
ss_arena_fork_prepare(void)
{
    pthread_mutex_lock(&g_lock);
}

static void
close_if_mid_fill(ss_arena *a)
{
    if (pthread_mutex_trylock(&a->fill_lock) == 0) {
        pthread_mutex_unlock(&a->fill_lock);
        return;
    }
    /* Locked by a thread of the parent. Its filler's reference (if any) is kept: the
     * arena is never freed in the child, which never destroys a locked mutex. */
    a->forked_mid_fill = 1;
    __atomic_store_n(&a->closed, 1, __ATOMIC_RELAXED);
}

void
ss_arena_fork_done(int in_child)
{
    if (in_child) {
        for (ss_arena *a = g_live.next; a != &g_live; a = a->next) {
            close_if_mid_fill(a);
        }
        if (g_default != NULL) {
            close_if_mid_fill(g_default);
            if (g_default->forked_mid_fill) {
                __atomic_store_n(&g_default, NULL, __ATOMIC_RELEASE);
            }
        }
    }
    pthread_mutex_unlock(&g_lock);
}

ss_arena *
ss_default_arena(void)
{
    ss_arena *a = __atomic_load_n(&g_default, __ATOMIC_ACQUIRE);
    if (a != NULL) {
        return a;
    }
    ss_arena *fresh = arena_new(1);
    if (fresh == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&g_lock);
    if (g_default == NULL) {
        __atomic_store_n(&g_default, fresh, __ATOMIC_RELEASE);
        fresh = NULL;
    }
    a = g_default;
    pthread_mutex_unlock(&g_lock);
    if (fresh != NULL) {            /* lost the race: nothing was allocated in it */
        pthread_mutex_destroy(&fresh->fill_lock);
        PyMem_RawFree(fresh);
    }
    return a;
}

uint64_t
ss_arena_id(ss_arena *a)
{
    return a->id;
}

ss_arena *
ss_arena_of(PyObject *op)
{
    ss_block *b = block_of_object(op);
    return b ? b->arena : NULL;
}

int
ss_is_shared(PyObject *op)
{
    return ss_rt_is_shareable_static(op) || block_of_object(op) != NULL;
}

void
ss_arena_incref(ss_arena *a)
{
    if (a == NULL || a->is_default) {
        return;
    }
    pthread_mutex_lock(&g_lock);
    a->refs++;
    pthread_mutex_unlock(&g_lock);
}

void
ss_arena_decref(ss_arena *a)
{
    if (a == NULL || a->is_default) {
        return;
    }
    pthread_mutex_lock(&g_lock);
    a->refs--;
    if (a->refs == 0) {
        __atomic_store_n(&a->closed, 1, __ATOMIC_RELAXED);  /* no new handle can be made */
    }
    int dead = arena_unlink_if_dead(a);
    pthread_mutex_unlock(&g_lock);
    if (dead) {
        arena_free(a);
    }
}

int
ss_arena_add_holder(ss_arena *a, int64_t interp_id)
{
    if (a == NULL || a->is_default) {
        return 0;
    }
    int rc = 0;
    pthread_mutex_lock(&g_lock);
    for (Py_ssize_t i = 0; i < a->nholders; i++) {
        if (a->holders[i] == interp_id) {
            goto done;
        }
    }
    if (a->nholders == a->capholders) {
        Py_ssize_t cap = a->capholders ? a->capholders * 2 : 4;
        int64_t *h = PyMem_RawRealloc(a->holders, (size_t)cap * sizeof(int64_t));
        if (h == NULL) {
            rc = -1;
            goto done;
        }
        a->holders = h;
        a->capholders = cap;
    }
    a->holders[a->nholders++] = interp_id;
done:
    pthread_mutex_unlock(&g_lock);
    if (rc < 0) {
        PyErr_NoMemory();
    }
    return rc;
}

void
ss_interpreter_destroyed(int64_t interp_id)
{
    ss_arena *dead = NULL;
    pthread_mutex_lock(&g_lock);
    ss_arena *a = g_live.next;
    while (a != &g_live) {
        ss_arena *next = a->next;
        for (Py_ssize_t i = 0; i < a->nholders; i++) {
            if (a->holders[i] == interp_id) {
                a->holders[i] = a->holders[--a->nholders];
                break;
            }
        }
        if (arena_unlink_if_dead(a)) {
            a->next = dead;         /* reuse the link for the local list */
            dead = a;
        }
        a = next;
    }
    pthread_mutex_unlock(&g_lock);
    while (dead != NULL) {
        ss_arena *next = dead->next;
        dead->next = NULL;
        arena_free(dead);
        dead = next;
    }
}

/* ---- filling -------------------------------------------------------------------------- */

static void
arena_refuse_closed(ss_arena *a)
{
    if (a->forked_mid_fill) {
        PyErr_SetString(PyExc_ValueError,
                        "share() on an Arena that another thread was filling when this "
                        "process was forked: the child cannot finish that fill; its shared "
                        "objects stay readable, share into a new Arena()");
    }
    else {
        /* Said for share() and share_detached() alike: name no method. */
        PyErr_SetString(PyExc_ValueError,
                        "this Arena is closed: nothing more can be shared into it (what it "
                        "shared stays readable); share into a new Arena()");
    }
}

ss_filler *
ss_filler_begin(ss_arena *a)
{
    unsigned long me = PyThread_get_thread_ident();
    if (__atomic_load_n(&a->fill_owner, __ATOMIC_RELAXED) == me) {
        PyErr_SetString(PyExc_RuntimeError,
                        "share() re-entered while this thread is filling the same arena");
        return NULL;
    }
    /* A closed arena stays closed: refuse before waiting for its fill lock, which in a
     * forked child may be held for ever (ss_arena_fork_done). */
    if (__atomic_load_n(&a->closed, __ATOMIC_RELAXED)) {
        arena_refuse_closed(a);
        return NULL;
    }
    ss_mutex_lock_with_gil(&a->fill_lock);
    pthread_mutex_lock(&g_lock);
    int closed = a->closed;
    if (!closed && !a->is_default) {
        a->refs++;                  /* the filler's own reference */
    }
    pthread_mutex_unlock(&g_lock);
    if (closed) {
        pthread_mutex_unlock(&a->fill_lock);
        arena_refuse_closed(a);
        return NULL;
    }
    __atomic_store_n(&a->fill_owner, me, __ATOMIC_RELAXED);
    /* The filler lives in the arena: one at a time, under the fill lock. */
    ss_filler *f = a->filler;
    memset(f, 0, sizeof(*f));
    f->a = a;
    f->mark_blocks = a->blocks;
    f->mark_cur = a->cur;
    f->mark_bump = a->cur ? a->cur->bump : NULL;
    f->mark_nbytes = a->nbytes;
    f->mark_ndeps = a->ndeps;
    return f;
}

static void
filler_end(ss_filler *f)
{
    ss_arena *a = f->a;
    __atomic_store_n(&a->fill_owner, 0UL, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&a->fill_lock);
    ss_arena_decref(a);             /* the filler's reference (no-op for the default) */
}

void
ss_filler_commit(ss_filler *f)
{
    filler_end(f);
}

static void str_memo_forget_since_mark(ss_filler *f);

/* Was the memo's table allocated in this arena by the current call (after its mark)? */
static int
str_table_since_mark(ss_filler *f)
{
    ss_arena *a = f->a;
    const char *t = (const char *)a->str_table;
    for (ss_block *b = a->blocks; b != f->mark_blocks; b = b->next) {
        if (t >= (const char *)b && t < b->end) {
            return 1;
        }
    }
    ss_block *b = f->mark_cur;
    return b != NULL && t >= f->mark_bump && t < b->end;
}

void
ss_filler_abort(ss_filler *f)
{
    ss_arena *a = f->a;
    /* First the memo (it finds the strings' blocks), then the memory. */
    str_memo_forget_since_mark(f);
    if (a->str_table_in_arena && str_table_since_mark(f)) {
        /* The memo's first table was made by this call, so it holds only strings of this
         * call: it goes with the memory that is taken back. */
        a->str_table = NULL;
        a->str_mask = 0;
        a->str_used = 0;
        a->str_tombs = 0;
        a->str_table_in_arena = 0;
    }
    /* Blocks added since begin: unmapped whole. */
    while (a->blocks != f->mark_blocks) {
        ss_block *b = a->blocks;
        a->blocks = b->next;
        block_free(b);
    }
    a->cur = f->mark_cur;
    ss_block *b = a->cur;
    if (b != NULL && b->bump != f->mark_bump) {
        /* Zero what was handed out since the mark and clear its object bits, so the
         * memory is as fresh as mmap gave it. */
        size_t from = (size_t)(f->mark_bump - (char *)b) / SS_GRAIN;
        size_t to = (size_t)(b->bump - (char *)b) / SS_GRAIN;
        for (size_t bit = from; bit < to; bit++) {
            __atomic_fetch_and(&b->bitmap[bit >> 3], (uint8_t)~(1u << (bit & 7)),
                               __ATOMIC_RELAXED);
        }
        memset(f->mark_bump, 0, (size_t)(b->bump - f->mark_bump));
        b->bump = f->mark_bump;
    }
    __atomic_store_n(&a->nbytes, f->mark_nbytes, __ATOMIC_RELAXED);
    Py_ssize_t ndeps = a->ndeps;
    a->ndeps = f->mark_ndeps;
    for (Py_ssize_t i = f->mark_ndeps; i < ndeps; i++) {
        ss_arena_decref(a->deps[i]);
    }
    filler_end(f);
}

static int str_table_resize(ss_arena *a, size_t room);

int
ss_filler_expect(ss_filler *f, size_t nbytes, size_t nstrings)
{
    ss_arena *a = f->a;
    f->expect = nbytes;
    /* The memo would grow past this anyway: build it at its final size at once, not by
     * doublings that rehash it each time (str_table_grow was 4% of a 1 MB corpus). Capped
     * to what the bytes expected can hold, in case the estimate is off. */
    size_t cap_by_bytes = nbytes / sizeof(PyASCIIObject);
    if (nstrings > cap_by_bytes) {
        nstrings = cap_by_bytes;
    }
    size_t live = a->str_used - a->str_tombs;
    size_t cap = a->str_table ? a->str_mask + 1 : 0;
    if (nstrings > 64 && (live + nstrings + 1) * 2 > cap) {
        return str_table_resize(a, nstrings);
    }
    return 0;
}

ss_arena *
ss_filler_arena(ss_filler *f)
{
    return f->a;
}

int
ss_filler_depend(ss_filler *f, ss_arena *other)
{
    ss_arena *a = f->a;
    if (other == NULL || other == a || other->is_default) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < a->ndeps; i++) {
        if (a->deps[i] == other) {
            return 0;
        }
    }
    if (a->ndeps == a->capdeps) {
        Py_ssize_t cap = a->capdeps ? a->capdeps * 2 : 4;
        ss_arena **d = PyMem_RawRealloc(a->deps, (size_t)cap * sizeof(ss_arena *));
        if (d == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        a->deps = d;
        a->capdeps = cap;
    }
    /* The caller reached `other` through an object it holds, so `other` is alive. */
    ss_arena_incref(other);
    a->deps[a->ndeps++] = other;
    return 0;
}

/* Set the object-start bit of `op`. Only the filler, under the arena's fill lock, writes
 * a block's bitmap, so a plain read-modify-write is enough (a locked `or` per object cost
 * ~10% of share()); the release store publishes the bit after the object's header for
 * the lock-free readers of block_of_object(). */
static inline void
mark_object_start(ss_block *b, const void *op)
{
    size_t bit = (size_t)((const char *)op - (const char *)b) / SS_GRAIN;
    uint8_t *byte = &b->bitmap[bit >> 3];
    uint8_t old = __atomic_load_n(byte, __ATOMIC_RELAXED);
    __atomic_store_n(byte, (uint8_t)(old | (1u << (bit & 7))), __ATOMIC_RELEASE);
}

/* bump_alloc() when the current block has no room: a new block. */
static ss_block *
bump_block_new(ss_arena *a, size_t total)
{
    ss_block *b = block_new(a, total);
    if (b == NULL) {
        return NULL;
    }
    /* A big object's block keeps being "current" only if it has more room left. */
    if (total < SS_BIG_OBJECT || a->cur == NULL
        || (size_t)(b->end - b->data) - total > (size_t)(a->cur->end - a->cur->bump))
    {
        a->cur = b;
    }
    return b;
}

/* Inlined into every allocation of share(): the call cost ~8 % of a walk. */
static inline __attribute__((always_inline)) void *
bump_alloc(ss_filler *f, size_t total, ss_block **out)
{
    ss_arena *a = f->a;
    ss_block *b = a->cur;
    if (b == NULL || (size_t)(b->end - b->bump) < total) {
        b = bump_block_new(a, total);
        if (b == NULL) {
            return NULL;
        }
    }
    char *p = b->bump;
    b->bump += total;
    if (b->bump > b->populated) {
        populate_to(b, b->bump);
    }
    __atomic_store_n(&a->nbytes, a->nbytes + total, __ATOMIC_RELAXED);
    *out = b;
    return p;
}

/* The bytes an object of `type` and `size` takes in a block, and where it starts in them
 * (after the GC header of a GC type). ss_filler_shrink_last() must measure the last
 * object exactly as ss_filler_alloc_object() allocated it. */
static inline size_t
object_span(PyTypeObject *type, size_t size, size_t *pre)
{
    *pre = (type->tp_flags & Py_TPFLAGS_HAVE_GC) ? SS_GC_HEAD_SIZE : 0;
    return (*pre + size + SS_GRAIN - 1) & ~(size_t)(SS_GRAIN - 1);
}

PyObject *
ss_filler_alloc_object(ss_filler *f, PyTypeObject *type, size_t size)
{
    unsigned long flags = type->tp_flags;
    if ((flags & Py_TPFLAGS_HEAPTYPE) || (flags & SS_TPFLAGS_PREHEADER)
        || type->tp_weaklistoffset != 0 || type->tp_dictoffset != 0)
    {
        PyErr_Format(PyExc_TypeError,
                     "%s objects cannot live in an arena (heap type, instance dict or "
                     "weak references)", type->tp_name);
        return NULL;
    }
    size_t pre;
    size_t total = object_span(type, size, &pre);
    ss_block *b;
    char *p = bump_alloc(f, total, &b);
    if (p == NULL) {
        return NULL;
    }
    /* mmap'd memory is zero, and abort re-zeroes what it takes back: the GC header
     * (untracked) and the body are already zero. */
    PyObject *op = (PyObject *)(p + pre);
    Py_SET_TYPE(op, type);
    ss_set_immortal(op);
    mark_object_start(b, op);
    return op;
}

size_t
ss_filler_room(ss_filler *f)
{
    ss_block *b = f->a->cur;
    return b == NULL ? 0 : (size_t)(b->end - b->bump);
}

void
ss_filler_shrink_last(ss_filler *f, PyObject *op, size_t size, size_t new_size)
{
    ss_arena *a = f->a;
    ss_block *b = a->cur;
    size_t pre;
    size_t total = object_span(Py_TYPE(op), size, &pre);
    size_t keep = object_span(Py_TYPE(op), new_size, &pre);
    char *start = (char *)op - pre;
    if (b != NULL && keep < total && start + total == b->bump) {
        /* The tail is zero (the caller's promise), as memory past the bump must be. */
        b->bump = start + keep;
        __atomic_store_n(&a->nbytes, a->nbytes - (total - keep), __ATOMIC_RELAXED);
    }
}

void *
ss_filler_alloc_raw(ss_filler *f, size_t size)
{
    size_t total = (size + SS_GRAIN - 1) & ~(size_t)(SS_GRAIN - 1);
    if (total == 0) {
        total = SS_GRAIN;
    }
    ss_block *b;
    return bump_alloc(f, total, &b);
}

/* ---- the memo of strings by value ----------------------------------------------------- */

static inline int
str_equal(PyObject *s, const void *data, int kind, Py_ssize_t len)
{
    return PyUnicode_GET_LENGTH(s) == len && PyUnicode_KIND(s) == kind
        && memcmp(PyUnicode_DATA(s), data, (size_t)len * (size_t)kind) == 0;
}

/* The table's memory: small tables from the raw allocator; big ones mapped and faulted
 * in with one call, since calloc'd memory fresh from mmap faults twice per page (the probe
 * reads the zero page, the insert writes it), which cost as much as the probing. Pages of
 * 4 KiB, not huge pages: every growth faults in a whole new table, and on this VM a huge
 * page costs 0.15-1.2 ms per MiB to fault in (whether the host backs it already) against
 * ~0.3 ms per MiB for 4 KiB pages in bulk, while a probe's TLB miss adds only ~10 ns to its
 * ~150 ns cache miss (measured: dependent random reads of 64 MiB), and share.c prefetches
 * the probed slots anyway. share() of 1 MB tables into the default arena: -25%. */
#define STR_TABLE_MAPPED ((size_t)256 << 10)

static str_slot *
str_table_alloc(size_t cap)
{
    size_t bytes = cap * sizeof(str_slot);
    if (bytes < STR_TABLE_MAPPED) {
        return PyMem_RawCalloc(cap, sizeof(str_slot));
    }
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        return NULL;
    }
#ifdef MADV_POPULATE_WRITE
    (void)madvise(p, bytes, MADV_POPULATE_WRITE);
#endif
    return p;
}

static void
str_table_free(str_slot *t, size_t cap)
{
    if (t == NULL) {
        return;
    }
    if (cap * sizeof(str_slot) < STR_TABLE_MAPPED) {
        PyMem_RawFree(t);
    }
    else {
        munmap(t, cap * sizeof(str_slot));
    }
}

PyObject *
ss_filler_str_find(ss_filler *f, const void *data, int kind, Py_ssize_t len, Py_hash_t hash)
{
    ss_arena *a = f->a;
    f->str_hint_table = NULL;
    if (a->str_table == NULL) {
        return NULL;
    }
    size_t i = (size_t)hash & a->str_mask;
    str_slot *e;
    while ((e = &a->str_table[i])->s != NULL) {
        if (e->hash == hash && e->s != STR_TOMB && str_equal(e->s, data, kind, len)) {
            return e->s;
        }
        i = (i + 1) & a->str_mask;
    }
    f->str_hint = i;
    f->str_hint_hash = hash;
    f->str_hint_used = a->str_used;
    f->str_hint_table = a->str_table;
    return NULL;
}

void
ss_filler_str_prefetch(ss_filler *f, Py_hash_t hash)
{
    ss_arena *a = f->a;
    if (a->str_table != NULL) {
        __builtin_prefetch(&a->str_table[(size_t)hash & a->str_mask], 1);
    }
}

static void
str_table_put(str_slot *table, size_t mask, PyObject *s, Py_hash_t h)
{
    size_t i = (size_t)h & mask;
    while (table[i].s != NULL) {
        i = (i + 1) & mask;
    }
    table[i].hash = h;
    table[i].s = s;
}

/* Rebuild the table without its tombstones, with room to grow: load at most 1/3 after,
 * 1/2 before the next rebuild. -1 + MemoryError (the table is left as it was). */
static int
str_table_grow(ss_arena *a)
{
    return str_table_resize(a, 0);
}

/* Reinsert the entry at t[p] (a tombstone is dropped) into the table of 2 * cap slots. */
static inline void
str_table_move(str_slot *t, size_t p, size_t mask)
{
    str_slot x = t[p];
    t[p].hash = 0;
    t[p].s = NULL;
    if (x.s != STR_TOMB) {
        str_table_put(t, mask, x.s, x.hash);
    }
}

/* Double a mapped table where it lies: mremap() gives it an upper half of fresh zero
 * pages and moves its pages without copying them, and the entries are rehashed in place.
 * Against a new table and a copy, the kernel zeroes half the bytes (the default arena's
 * memo holds every string ever shared: its doublings are most of the memo's page faults),
 * and the old and the new table never exist at once. 0 when done; 1 when the caller must
 * copy instead (mremap failed: nothing changed).
 *
 * Why in place is correct, for linear probing with tables of 2^k slots: an entry's home in
 * the doubled table is its old home h, or h + cap. Entries are taken in the old table's
 * cyclic order starting after an empty slot e, so when the entry at p is moved, every slot
 * of the run from its home to p (which holds no empty slot, so not e) has been handled
 * already, and the same holds for the copies of those slots in the upper half: reinserted
 * from h it lands at or before p, from h + cap at or before p + cap (or, for an entry whose
 * run wrapped past the old table's last slot, at or before p after wrapping again). So it
 * never probes past an entry still waiting to move, whose move would later leave a hole in
 * its probe sequence.
 * tests/test_share_memo.py checks that every string is still found after doublings, with
 * runs that wrap past the last slot; a Python model of this function was checked against
 * every table of 8 slots and 60,000 random, clustered tables of 8-256 slots. Under the
 * fill lock. */
static int
str_table_double_in_place(ss_arena *a)
{
#ifdef MREMAP_MAYMOVE
    size_t cap = a->str_mask + 1;
    size_t bytes = cap * sizeof(str_slot);
    str_slot *t = mremap(a->str_table, bytes, 2 * bytes, MREMAP_MAYMOVE);
    if (t == MAP_FAILED) {
        return 1;
    }
#ifdef MADV_POPULATE_WRITE
    (void)madvise(t + cap, bytes, MADV_POPULATE_WRITE);
#endif
    size_t mask = 2 * cap - 1;
    size_t e = 0;
    while (t[e].s != NULL) {            /* the load is at most 1/2: there is one */
        e++;
    }
    for (size_t j = 1; j <= cap; j++) {
        size_t p = (e + j) & (cap - 1);
        if (t[p].s != NULL) {
            str_table_move(t, p, mask);
        }
    }
    a->str_table = t;
    a->str_mask = mask;
    a->str_used -= a->str_tombs;
    a->str_tombs = 0;
    __atomic_store_n(&a->str_grown_in_place, a->str_grown_in_place + 1, __ATOMIC_RELAXED);
    return 0;
#else
    return 1;
#endif
}

/* The same, with room for `room` more strings before the next rebuild. */
static int
str_table_resize(ss_arena *a, size_t room)
{
    size_t cap = a->str_table ? a->str_mask + 1 : 0;
    size_t live = a->str_used - a->str_tombs;
    size_t ncap = STR_TABLE_FIRST;      /* small: a 1 KB share() touches few pages */
    while ((live + 1) * 3 > ncap || (live + room + 1) * 2 > ncap) {
        ncap <<= 1;
    }
    a->filler->str_hint_table = NULL;   /* the hint of ss_filler_str_find() is stale */
    if (ncap == 2 * cap && !a->str_table_in_arena
        && cap * sizeof(str_slot) >= STR_TABLE_MAPPED
        && str_table_double_in_place(a) == 0)
    {
        return 0;
    }
    str_slot *t;
    int in_arena = 0;
    if (a->str_table == NULL && ncap == STR_TABLE_FIRST) {
        /* The first table of a small arena goes in the arena's own (pre-faulted) block:
         * a malloc'd one cost 12% of Arena().share() of 1 KB (malloc, and the faults of
         * the heap it grows). Bump memory is zero. Abandoned in place when it grows. */
        t = ss_filler_alloc_raw(a->filler, ncap * sizeof(str_slot));
        if (t == NULL) {
            return -1;
        }
        in_arena = 1;
    }
    else {
        t = str_table_alloc(ncap);
        if (t == NULL) {
            PyErr_NoMemory();
            return -1;
        }
    }
    for (size_t i = 0; i < cap; i++) {
        /* The hash kept in the slot: reading it from the string would miss the cache
         * once per string of the arena. */
        PyObject *s2 = a->str_table[i].s;
        if (s2 != NULL && s2 != STR_TOMB) {
            str_table_put(t, ncap - 1, s2, a->str_table[i].hash);
        }
    }
    if (!a->str_table_in_arena) {
        str_table_free(a->str_table, cap);
    }
    a->str_table_in_arena = in_arena;
    a->str_table = t;
    a->str_mask = ncap - 1;
    a->str_used = live;
    a->str_tombs = 0;
    return 0;
}

int
ss_filler_str_add(ss_filler *f, PyObject *s)
{
    ss_arena *a = f->a;
    Py_hash_t h = _PyASCIIObject_CAST(s)->hash;
    if (a->str_table == NULL && str_table_grow(a) < 0) {
        return -1;
    }
    if (f->str_hint_table == a->str_table && f->str_hint_used == a->str_used
        && f->str_hint_hash == h)
    {
        /* The probe of ss_filler_str_find() for this string ended here. */
        a->str_table[f->str_hint].hash = h;
        a->str_table[f->str_hint].s = s;
    }
    else {
        str_table_put(a->str_table, a->str_mask, s, h);
    }
    f->str_hint_table = NULL;
    a->str_used++;
    /* Grow after the insert, so that the next find probes the table it inserts into. A
     * failure here leaves `s` in the table; the caller's abort takes it out again. */
    if ((a->str_used + 1) * 2 > a->str_mask + 1) {
        return str_table_grow(a);
    }
    return 0;
}

/* Abort: tombstones for the strings of the memo that this filler allocated, found by
 * address (the blocks added since begin, and the current block past the mark), so that
 * no journal is kept while filling. */
static void
str_memo_forget_since_mark(ss_filler *f)
{
    ss_arena *a = f->a;
    if (a->str_table == NULL || a->str_used == 0) {
        return;
    }
    for (size_t i = 0; i <= a->str_mask; i++) {
        PyObject *t = a->str_table[i].s;
        if (t == NULL || t == STR_TOMB) {
            continue;
        }
        ss_block *b = block_of_object(t);
        int fresh = (b == f->mark_cur && (char *)t >= f->mark_bump);
        for (ss_block *n = a->blocks; !fresh && n != f->mark_blocks; n = n->next) {
            fresh = (n == b);
        }
        if (fresh) {
            a->str_table[i].s = STR_TOMB;   /* keeps its hash: probing goes on past it */
            a->str_tombs++;
        }
    }
}

/* ---- Arena handles -------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    ss_arena *arena;
} ArenaObject;

PyObject *
ss_arena_wrap(ss_state *st, ss_arena *a)
{
    ArenaObject *self = PyObject_New(ArenaObject, st->arena_type);
    if (self == NULL) {
        return NULL;
    }
    ss_arena_incref(a);
    self->arena = a;
    return (PyObject *)self;
}

ss_arena *
ss_arena_unwrap(ss_state *st, PyObject *op)
{
    if (st == NULL || st->arena_type == NULL || !PyObject_TypeCheck(op, st->arena_type)) {
        return NULL;
    }
    return ((ArenaObject *)op)->arena;
}

static PyObject *
Arena_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwargs != NULL && PyDict_GET_SIZE(kwargs) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Arena() takes no arguments");
        return NULL;
    }
    ArenaObject *self = (ArenaObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->arena = arena_new(0);     /* its one reference is this handle's */
    if (self->arena == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static void
Arena_dealloc(PyObject *op)
{
    ArenaObject *self = (ArenaObject *)op;
    PyTypeObject *tp = Py_TYPE(op);
    ss_arena *a = self->arena;
    self->arena = NULL;
    if (a != NULL) {
        ss_arena_decref(a);
    }
    tp->tp_free(op);
    Py_DECREF(tp);
}

static PyObject *
Arena_share(PyObject *op, PyObject *obj)
{
    ss_state *st = PyType_GetModuleState(Py_TYPE(op));
    if (st == NULL) {
        return NULL;
    }
    return ss_share_into(st, ((ArenaObject *)op)->arena, obj);
}

/* share_detached(obj) -> SharedRef: share without the caller becoming a holder (see
 * ss_share_detached in share.c and SharedRef in xvalue.c). */
static PyObject *
Arena_share_detached(PyObject *op, PyObject *obj)
{
    ss_state *st = PyType_GetModuleState(Py_TYPE(op));
    if (st == NULL) {
        return NULL;
    }
    PyObject *shared = ss_share_detached(st, ((ArenaObject *)op)->arena, obj);
    if (shared == NULL) {
        return NULL;
    }
    PyObject *ref = ss_sharedref_new(st, shared);
    Py_DECREF(shared);      /* immortal or already reachable here: no write, no free */
    return ref;
}

static PyObject *
Arena_close(PyObject *op, PyObject *unused)
{
    ss_arena *a = ((ArenaObject *)op)->arena;
    pthread_mutex_lock(&g_lock);
    __atomic_store_n(&a->closed, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g_lock);
    Py_RETURN_NONE;
}

/* Whether close() was called: a->closed is written under g_lock (Arena_close). */
static int
arena_closed(ss_arena *a)
{
    pthread_mutex_lock(&g_lock);
    int closed = a->closed;
    pthread_mutex_unlock(&g_lock);
    return closed;
}

/* `with` on a closed arena is refused at once, as a closed file's is: its block could
 * share nothing into it. */
static PyObject *
Arena_enter(PyObject *op, PyObject *unused)
{
    ss_arena *a = ((ArenaObject *)op)->arena;
    if (arena_closed(a)) {
        arena_refuse_closed(a);
        return NULL;
    }
    return Py_NewRef(op);
}

static PyObject *
Arena_exit(PyObject *op, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *r = Arena_close(op, NULL);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_FALSE;
}

static PyObject *
Arena_get_closed(PyObject *op, void *closure)
{
    return PyBool_FromLong(arena_closed(((ArenaObject *)op)->arena));
}

static PyObject *
Arena_get_nbytes(PyObject *op, void *closure)
{
    ss_arena *a = ((ArenaObject *)op)->arena;
    return PyLong_FromSize_t(__atomic_load_n(&a->nbytes, __ATOMIC_RELAXED));
}

static PyObject *
Arena_get_id(PyObject *op, void *closure)
{
    return PyLong_FromUnsignedLongLong(((ArenaObject *)op)->arena->id);
}

static PyObject *
Arena_repr(PyObject *op)
{
    ss_arena *a = ((ArenaObject *)op)->arena;
    int closed = arena_closed(a);
    return PyUnicode_FromFormat("<subsandbox.Arena id=%llu nbytes=%zu%s>",
                                (unsigned long long)a->id,
                                __atomic_load_n(&a->nbytes, __ATOMIC_RELAXED),
                                closed ? " closed" : "");
}

static PyMethodDef Arena_methods[] = {
    {"share", Arena_share, METH_O,
     "share(obj) -> a deeply immutable, immortal copy of obj in this arena.\n\n"
     "The calling interpreter becomes a holder of the arena (see docs/shared-memory.md)."},
    {"share_detached", Arena_share_detached, METH_O,
     "share_detached(obj) -> SharedRef: share obj into this arena WITHOUT the calling\n"
     "interpreter becoming a holder. The handle cannot be dereferenced here; passed to a\n"
     "sandbox (Sandbox.call, a channel, SandboxPoolExecutor) it arrives as the shared\n"
     "object. The arena lives while a handle exists (see docs/shared-memory.md)."},
    {"close", Arena_close, METH_NOARGS,
     "Refuse further share() calls. The memory is given back once no handle, no in-flight "
     "item and no holder interpreter remains."},
    {"__enter__", Arena_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)(void (*)(void))Arena_exit, METH_FASTCALL, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Arena_getset[] = {
    {"closed", Arena_get_closed, NULL, "True once close() was called (or no handle is left).",
     NULL},
    {"nbytes", Arena_get_nbytes, NULL, "Bytes allocated in the arena.", NULL},
    {"id", Arena_get_id, NULL, "Process-wide id of the arena.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot Arena_slots[] = {
    {Py_tp_new, Arena_new},
    {Py_tp_dealloc, Arena_dealloc},
    {Py_tp_methods, Arena_methods},
    {Py_tp_getset, Arena_getset},
    {Py_tp_repr, Arena_repr},
    {Py_tp_doc, "Arena() -> a region of process-wide memory for shared immutable objects.\n\n"
                "Use as a context manager, or call close(), when done sharing into it."},
    {0, NULL},
};

static PyType_Spec Arena_spec = {
    .name = "subsandbox._core.Arena",
    .basicsize = sizeof(ArenaObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
    .slots = Arena_slots,
};

/* ---- private functions: stats, interpreter end, cross-interpreter tests --------------- */

typedef struct {
    uint64_t token;
    PyObject *obj;
    ss_arena *arena;
} token_entry;

static token_entry *g_tokens;
static Py_ssize_t g_ntokens, g_captokens;
static uint64_t g_next_token = 1;

static PyObject *
testing_export(PyObject *module, PyObject *obj)
{
    if (!ss_is_shared(obj)) {
        ss_state *st = ss_get_state(module);
        PyErr_Format(st->not_shareable_error,
                     "_testing_export(): a %.100s object that is not shared",
                     Py_TYPE(obj)->tp_name);
        return NULL;
    }
    ss_arena *a = ss_arena_of(obj);
    uint64_t token = 0;
    pthread_mutex_lock(&g_lock);
    if (g_ntokens == g_captokens) {
        Py_ssize_t cap = g_captokens ? g_captokens * 2 : 16;
        token_entry *t = PyMem_RawRealloc(g_tokens, (size_t)cap * sizeof(token_entry));
        if (t == NULL) {
            pthread_mutex_unlock(&g_lock);
            return PyErr_NoMemory();
        }
        g_tokens = t;
        g_captokens = cap;
    }
    token = g_next_token++;
    g_tokens[g_ntokens++] = (token_entry){token, obj, a};
    if (a != NULL && !a->is_default) {
        a->refs++;                  /* the in-flight reference */
    }
    pthread_mutex_unlock(&g_lock);
    return PyLong_FromUnsignedLongLong(token);
}

static PyObject *
testing_import(PyObject *module, PyObject *arg)
{
    unsigned long long token = PyLong_AsUnsignedLongLong(arg);
    if (token == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    token_entry e = {0, NULL, NULL};
    pthread_mutex_lock(&g_lock);
    for (Py_ssize_t i = 0; i < g_ntokens; i++) {
        if (g_tokens[i].token == token) {
            e = g_tokens[i];
            g_tokens[i] = g_tokens[--g_ntokens];
            break;
        }
    }
    pthread_mutex_unlock(&g_lock);
    if (e.obj == NULL) {
        PyErr_Format(PyExc_KeyError, "no exported object with token %llu", token);
        return NULL;
    }
    ss_state *st = ss_get_state(module);
    if (ss_arena_add_holder(e.arena, st->interp_id) < 0) {
        /* Put it back: still in flight. */
        pthread_mutex_lock(&g_lock);
        if (g_ntokens < g_captokens) {
            g_tokens[g_ntokens++] = e;
            pthread_mutex_unlock(&g_lock);
        }
        else {
            pthread_mutex_unlock(&g_lock);
            ss_arena_decref(e.arena);
        }
        return NULL;
    }
    ss_arena_decref(e.arena);       /* no longer in flight; we hold it now */
    return Py_NewRef(e.obj);
}

static PyObject *
interpreter_destroyed(PyObject *module, PyObject *arg)
{
    long long id = PyLong_AsLongLong(arg);
    if (id == -1 && PyErr_Occurred()) {
        return NULL;
    }
    ss_interpreter_destroyed((int64_t)id);
    Py_RETURN_NONE;
}

static PyObject *
arena_stats(PyObject *module, PyObject *unused)
{
    PyObject *arenas = PyDict_New();
    if (arenas == NULL) {
        return NULL;
    }
    /* Snapshot under the lock into raw memory, then build Python objects. */
    typedef struct {
        uint64_t id;
        Py_ssize_t refs;
        int closed;
        size_t nbytes, reserved;
        size_t memo_grown_in_place;
        Py_ssize_t nholders;
        int64_t holders[8];
    } snap;
    snap *snaps = NULL;
    Py_ssize_t n = 0, cap = 0;
    size_t reserved, default_reserved = 0, default_nbytes = 0;
    size_t slab_bytes = 0, slots_free = 0, slots_free_resident = 0;
    Py_ssize_t nblocks;
    for (;;) {
        pthread_mutex_lock(&g_lock);
        Py_ssize_t count = 0;
        for (ss_arena *a = g_live.next; a != &g_live; a = a->next) {
            count++;
        }
        if (count > cap) {
            pthread_mutex_unlock(&g_lock);
            PyMem_RawFree(snaps);
            cap = count + 8;
            snaps = PyMem_RawMalloc((size_t)cap * sizeof(snap));
            if (snaps == NULL) {
                Py_DECREF(arenas);
                return PyErr_NoMemory();
            }
            continue;
        }
        n = 0;
        for (ss_arena *a = g_live.next; a != &g_live; a = a->next) {
            snap *s = &snaps[n++];
            s->id = a->id;
            s->refs = a->refs;
            s->closed = a->closed;
            s->nbytes = __atomic_load_n(&a->nbytes, __ATOMIC_RELAXED);
            s->reserved = a->reserved;
            /* Written under the fill lock (atomic stores), read here without it. */
            s->memo_grown_in_place = __atomic_load_n(&a->str_grown_in_place, __ATOMIC_RELAXED);
            s->nholders = a->nholders;
            for (Py_ssize_t i = 0; i < a->nholders && i < 8; i++) {
                s->holders[i] = a->holders[i];
            }
        }
        reserved = g_reserved;
        nblocks = g_nblocks;
        slab_bytes = g_slab_bytes;
        slots_free_resident = g_warm_free_bytes;
        for (int k = 0; k < SS_SLOT_CLASSES; k++) {
            slots_free += g_slots[k].nfree;
        }
        if (g_default != NULL) {
            default_reserved = g_default->reserved;
            default_nbytes = __atomic_load_n(&g_default->nbytes, __ATOMIC_RELAXED);
        }
        pthread_mutex_unlock(&g_lock);
        break;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        snap *s = &snaps[k];
        PyObject *holders = PyTuple_New(s->nholders < 8 ? s->nholders : 8);
        if (holders == NULL) {
            goto error;
        }
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(holders); i++) {
            PyObject *v = PyLong_FromLongLong(s->holders[i]);
            if (v == NULL) {
                Py_DECREF(holders);
                goto error;
            }
            PyTuple_SET_ITEM(holders, i, v);
        }
        PyObject *info = Py_BuildValue("{s:n,s:O,s:n,s:N,s:n,s:n,s:n}",
                                       "refs", s->refs, "closed", s->closed ? Py_True : Py_False,
                                       "nholders", s->nholders, "holders", holders,
                                       "nbytes", (Py_ssize_t)s->nbytes,
                                       "reserved", (Py_ssize_t)s->reserved,
                                       "memo_grown_in_place",
                                       (Py_ssize_t)s->memo_grown_in_place);
        PyObject *key = PyLong_FromUnsignedLongLong(s->id);
        if (info == NULL || key == NULL || PyDict_SetItem(arenas, key, info) < 0) {
            Py_XDECREF(info);
            Py_XDECREF(key);
            goto error;
        }
        Py_DECREF(info);
        Py_DECREF(key);
    }
    PyMem_RawFree(snaps);
    return Py_BuildValue("{s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:n,s:N}",
                         "slab_bytes", (Py_ssize_t)slab_bytes,
                         "slots_free", (Py_ssize_t)slots_free,
                         "slots_free_resident_bytes", (Py_ssize_t)slots_free_resident,
                         "live_arenas", n,
                         "bytes_reserved", (Py_ssize_t)reserved,
                         "blocks", nblocks,
                         "default_bytes_reserved", (Py_ssize_t)default_reserved,
                         "default_nbytes", (Py_ssize_t)default_nbytes,
                         "arenas", arenas);
error:
    PyMem_RawFree(snaps);
    Py_DECREF(arenas);
    return NULL;
}

static PyObject *
testing_is_shared_address(PyObject *module, PyObject *arg)
{
    /* Only the radix table and the bitmap are read: the address is never dereferenced. */
    void *p = PyLong_AsVoidPtr(arg);
    if (p == NULL && PyErr_Occurred()) {
        return NULL;
    }
    return PyBool_FromLong(block_of_object(p) != NULL);
}

static PyObject *
static_strings(PyObject *module, PyObject *unused)
{
    return ss_rt_static_strings();
}

static PyMethodDef arena_functions[] = {
    {"_testing_export", testing_export, METH_O,
     "_testing_export(shared_obj) -> token: pin the object's arena as in flight (tests)."},
    {"_testing_import", testing_import, METH_O,
     "_testing_import(token) -> obj: receive an exported object in this interpreter, which "
     "becomes a holder of its arena (tests)."},
    {"_interpreter_destroyed", interpreter_destroyed, METH_O,
     "_interpreter_destroyed(id): an interpreter created by subsandbox has been destroyed; "
     "it holds no arena any more. Never call it for a live interpreter."},
    {"_arena_stats", arena_stats, METH_NOARGS,
     "_arena_stats() -> dict: live arenas, bytes reserved, per-arena details."},
    {"_testing_is_shared_address", testing_is_shared_address, METH_O,
     "_testing_is_shared_address(addr) -> bool: does an arena object start at addr (tests)."},
    {"_static_strings", static_strings, METH_NOARGS,
     "_static_strings() -> tuple: the runtime's static strings that share() returns as is."},
    {NULL, NULL, 0, NULL},
};

int
ss_arena_exec(PyObject *module, ss_state *st)
{
    pthread_mutex_lock(&g_lock);
    int rc = 0;
    if (!g_rt_ready) {
        /* Only reads runtime-global memory and allocates raw memory: fine under g_lock. */
        rc = ss_rt_init();
        g_rt_ready = (rc == 0);
    }
    pthread_mutex_unlock(&g_lock);
    if (rc < 0) {
        return -1;
    }
    st->arena_type = (PyTypeObject *)PyType_FromModuleAndSpec(module, &Arena_spec, NULL);
    if (st->arena_type == NULL) {
        return -1;
    }
    if (PyModule_AddType(module, st->arena_type) < 0) {
        return -1;
    }
    return PyModule_AddFunctions(module, arena_functions);
}
