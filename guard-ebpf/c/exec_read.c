// CO-RE reads for the exec hold (`[commands] hold`): the names an exec can be known by, hashed
// so that the Rust program can look them up in HELD_NAMES.
//
// Compiled like c/core_read.c (see guard-ebpf/build.rs). The structures carry a `___exec`
// flavour suffix: CO-RE ignores it, and it keeps them apart from core_read.c's declarations of
// the same kernel structures (with other fields) when bpf-linker links both files.

typedef unsigned int __u32;
typedef unsigned long long __u64;

struct qstr___exec {
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct dentry___exec {
	struct qstr___exec d_name;
} __attribute__((preserve_access_index));

struct path___exec {
	struct dentry___exec *dentry;
} __attribute__((preserve_access_index));

struct file___exec {
	struct path___exec f_path;
} __attribute__((preserve_access_index));

struct mm_struct___exec {
	struct file___exec *exe_file;
} __attribute__((preserve_access_index));

// The kernel's `struct callback_head` (alias `rcu_head`): an entry of a task's task_works list.
struct callback_head___exec {
	struct callback_head___exec *next;
	void *func;
} __attribute__((preserve_access_index));

struct task_struct___exec {
	struct mm_struct___exec *mm;
	char comm[16];
	struct callback_head___exec *task_works;
} __attribute__((preserve_access_index));

// Where a struct file keeps the task_work entry its last fput() queues (____fput), by kernel:
// `f_task_work` (6.12 on), `f_rcuhead` (6.1 to 6.11), `f_u.fu_rcuhead` (before).
struct file___tw {
	struct callback_head___exec f_task_work;
} __attribute__((preserve_access_index));

struct file___rh {
	struct callback_head___exec f_rcuhead;
} __attribute__((preserve_access_index));

struct file___fu {
	union {
		struct callback_head___exec fu_rcuhead;
	} f_u;
} __attribute__((preserve_access_index));

struct linux_binprm___exec {
	const char *filename;
	const char *interp;
} __attribute__((preserve_access_index));

// Helper ids 113 and 115 (libbpf's bpf_helper_defs.h).
static long (*const bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;
static long (*const bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)115;

#define READ(dst, src, field) \
	bpf_probe_read_kernel((dst), sizeof(*(dst)), __builtin_preserve_access_index(&(src)->field))

// guard_common::exec::exec_name_hash: FNV-1a 64 over the first EXEC_NAME_LEN bytes of a name
// (what the kernel keeps of a program's name in `comm`).
#define EXEC_NAME_LEN 15
#define HASH_BASIS 0xcbf29ce484222325ULL
#define HASH_PRIME 0x00000100000001b3ULL
// Bytes of bprm->interp read to find its last component (#! lines are short; a longer
// interpreter path is still known by the executable's own name, h[2]).
#define INTERP_LEN 128
#define LAST_SCAN 64
// Entries of the task_works list looked at (see guard_exec_hashes), and so the most names of
// files an exec let go that are returned.
#define WORKS_MAX 8

// __builtin_preserve_field_info kinds (libbpf's bpf_core_read.h).
#define FIELD_BYTE_OFFSET 0
#define FIELD_EXISTS 2

// An index into the interpreter buffer, masked after an optimization barrier: clang would
// otherwise drop the mask where it can prove the bound, and 6.1's verifier cannot follow
// that proof ("invalid unbounded variable-offset read from stack").
static __u32 masked(__u32 i)
{
	asm volatile("" : "+r"(i));
	return i & (INTERP_LEN - 1);
}

struct guard_exec_hashes {
	// h[0]: comm (the last component of the path given to exec, as the kernel set it);
	// h[1]: the last component of bprm->interp when a script's interpreter was run (else 0);
	// h[2]: the name of the executable file itself (mm->exe_file: symbolic links resolved).
	__u64 h[3];
	// For a script: the names of the files whose last reference this exec dropped (the
	// script's own file among them: symbolic links resolved), `nfiles` entries, 0 for an
	// entry whose name could not be read.
	__u64 files[WORKS_MAX];
	__u32 nfiles;
	// 1 when the task_works list was read to its end (every such file is in `files`).
	__u32 walked;
};

// A name of at most 15 bytes, NUL-padded to 16 (`comm`, or read into a zeroed buffer).
union name16 {
	__u64 w[2];
	unsigned char b[16];
};

// Zeroes `n`, one word store at a time: clang would merge the stores into a call to memset,
// which 6.1's verifier refuses.
static void name16_zero(union name16 *n)
{
	n->w[0] = 0;
	asm volatile("" ::: "memory");
	n->w[1] = 0;
	asm volatile("" ::: "memory");
}

// FNV-1a over the bytes of `n` before its first NUL (at most EXEC_NAME_LEN). The loop skips
// the zero bytes instead of stopping at the first: past the name there are only zeros, and a
// loop without a data-dependent exit is one the verifier checks once, not once per length.
static __u64 hash_name(const union name16 *n)
{
	__u64 h = HASH_BASIS;

#pragma unroll
	for (int i = 0; i < EXEC_NAME_LEN; i++) {
		unsigned char c = n->b[i];

		if (c == 0)
			continue;
		h = (h ^ c) * HASH_PRIME;
	}
	return h;
}

// Reads the NUL-terminated name at `s` into `n` and returns its hash; 0 when there is none.
static __u64 hash_kernel_name(const unsigned char *s, union name16 *n)
{
	name16_zero(n);
	if (bpf_probe_read_kernel_str(n->b, sizeof(n->b), s) <= 1)
		return 0;
	return hash_name(n);
}

// The offset of the task_work entry in the kernel's struct file, -1 if not known.
static long file_work_offset(void)
{
	if (__builtin_preserve_field_info(((struct file___tw *)0)->f_task_work, FIELD_EXISTS))
		return __builtin_preserve_field_info(((struct file___tw *)0)->f_task_work, FIELD_BYTE_OFFSET);
	if (__builtin_preserve_field_info(((struct file___rh *)0)->f_rcuhead, FIELD_EXISTS))
		return __builtin_preserve_field_info(((struct file___rh *)0)->f_rcuhead, FIELD_BYTE_OFFSET);
	if (__builtin_preserve_field_info(((struct file___fu *)0)->f_u.fu_rcuhead, FIELD_EXISTS))
		return __builtin_preserve_field_info(((struct file___fu *)0)->f_u.fu_rcuhead, FIELD_BYTE_OFFSET);
	return -1;
}

// The names of the files the current exec let go, from `task`'s task_works list.
//
// A script's own file is gone by sched_process_exec: the kernel ran its interpreter and dropped
// the script's struct file (exec_binprm). The last fput() of a file in a user task does not free
// it at once: it queues ____fput on the task's task_works list, run on the way back to user
// mode, that is after this program. So the script's file, symbolic links resolved, is still
// there: the entry is embedded in the struct file. The list may hold other entries too (files
// closed on exec, a previous image's executable, other kinds of work): every entry is read as
// a file; an entry that is not one gives an unreadable or meaningless name, which only ever
// costs a check in user space. Returns 1 when the list was read to its end.
static int released_files(const struct task_struct___exec *task, struct guard_exec_hashes *res,
			  __u32 *nfiles)
{
	long off = file_work_offset();
	struct callback_head___exec *cb = 0;

	*nfiles = 0;
	if (off < 0 || READ(&cb, task, task_works) != 0)
		return 0;
	// Entry i's hash goes to files[i] (0 when unreadable): no counter that differs from one
	// path to another, which the verifier would otherwise explore once per value.
	for (__u32 i = 0; i < WORKS_MAX; i++) {
		struct callback_head___exec *next = 0;
		const struct file___exec *f;
		struct dentry___exec *d = 0;
		const unsigned char *dname = 0;
		union name16 en;
		__u64 h = 0;

		if (cb == 0) {
			*nfiles = i;
			return 1;
		}
		if (READ(&next, cb, next) != 0) {
			*nfiles = i;
			return 0;
		}
		f = (const struct file___exec *)((const char *)cb - off);
		if (READ(&d, f, f_path.dentry) == 0 && d != 0 && READ(&dname, d, d_name.name) == 0 &&
		    dname != 0)
			h = hash_kernel_name(dname, &en);
		res->files[i] = h;
		cb = next;
	}
	// A longer list: not every file was looked at.
	*nfiles = WORKS_MAX;
	return cb == 0;
}

// Fills `res` for the exec of `task` (the current task at sched_process_exec) from `bprm`.
// Returns 1 when a script's interpreter was run (bprm->interp differs from bprm->filename),
// 0 otherwise, -1 when nothing could be read. `files`, `nfiles` and `walked` are only written
// for a script (the caller zeroes `res`).
//
// A global, never inlined function (exported by build.rs): the verifier checks it once, on its
// own. Its pointer arguments arrive as scalars (only read through bpf_probe_read_kernel).
__attribute__((noinline)) int guard_exec_hashes(__u64 task_addr, __u64 bprm_addr, struct guard_exec_hashes *res)
{
	const struct task_struct___exec *task = (const struct task_struct___exec *)task_addr;
	const struct linux_binprm___exec *bprm = (const struct linux_binprm___exec *)bprm_addr;
	union name16 comm; // written whole by the probe read (the kernel pads it with NULs)
	unsigned char buf[INTERP_LEN];
	const char *filename = 0, *interp = 0;
	struct mm_struct___exec *mm = 0;
	struct file___exec *exe = 0;
	struct dentry___exec *d = 0;
	const unsigned char *dname = 0;
	int script = 0;
	__u64 h0 = 0, h1 = 0, h2 = 0;
	long n;

	if (res == 0 || task == 0)
		return -1;
	// The results go to locals and are stored once at the end: three zero stores in a row would
	// become a call to memset, a global function that 6.1's verifier refuses to be called with
	// this pointer.

	if (READ(&comm.b, task, comm) == 0)
		h0 = hash_name(&comm);

	if (bprm != 0 && READ(&filename, bprm, filename) == 0 && READ(&interp, bprm, interp) == 0 &&
	    interp != 0 && interp != filename) {
		script = 1;
		n = bpf_probe_read_kernel_str(buf, sizeof(buf), interp);
		if (n > 1) {
			// The last component: scan back from the end for the '/' (at most
			// LAST_SCAN bytes), then hash at most EXEC_NAME_LEN bytes after it. Loops
			// with fixed bounds and no counter the verifier must track per byte (a
			// forward scan of the whole path cost ~300 ms of verification per load).
			// A last component longer than LAST_SCAN - 1 bytes is not hashed.
			__u32 len = (__u32)(n - 1) & (INTERP_LEN - 1);
			__u32 start = INTERP_LEN;

			for (__u32 i = 1; i <= LAST_SCAN; i++) {
				if (i > len) {
					start = 0;
					break;
				}
				if (buf[masked(len - i)] == '/') {
					start = len - i + 1;
					break;
				}
			}
			if (start < len) {
				__u64 h = HASH_BASIS;

				for (__u32 i = 0; i < EXEC_NAME_LEN; i++) {
					if (start + i >= len)
						break;
					h = (h ^ buf[masked(start + i)]) * HASH_PRIME;
				}
				h1 = h;
			}
		}
	}

	if (READ(&mm, task, mm) == 0 && mm != 0 && READ(&exe, mm, exe_file) == 0 && exe != 0 &&
	    READ(&d, exe, f_path.dentry) == 0 && d != 0 && READ(&dname, d, d_name.name) == 0 &&
	    dname != 0) {
		union name16 en;

		h2 = hash_kernel_name(dname, &en);
	}
	if (script) {
		__u32 nfiles = 0;

		res->walked = released_files(task, res, &nfiles);
		res->nfiles = nfiles;
	}
	res->h[0] = h0;
	res->h[1] = h1;
	res->h[2] = h2;
	return script;
}
