// CO-RE accessors for kernel structures, called from the Rust programs.
//
// Rust cannot emit CO-RE relocations, so every read of a kernel structure field goes through
// here: clang turns each access to a `preserve_access_index` structure into a relocation
// record (.BTF.ext), and aya rewrites the field offsets against the running kernel's BTF
// (/sys/kernel/btf/vmlinux) when it loads the program. The structures below declare only the
// fields we read; names and types must match the kernel's, the layout does not.
//
// guard-ebpf/build.rs compiles this file to LLVM bitcode; bpf-linker links it with the Rust code.

typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int pid_t;

struct task_struct {
	pid_t tgid;
	struct task_struct *real_parent;
	struct mm_struct *mm;
} __attribute__((preserve_access_index));

struct file;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
} __attribute__((preserve_access_index));

struct linux_binprm {
	const char *filename;
} __attribute__((preserve_access_index));

// The helper, as libbpf's bpf_helper_defs.h declares it (helper id 113).
static long (*const bpf_probe_read_kernel)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)113;

// libbpf's BPF_CORE_READ_INTO for one level, without depending on libbpf's headers.
#define CORE_READ_INTO(dst, src, field)                                                           \
	bpf_probe_read_kernel((dst), sizeof(*(dst)), __builtin_preserve_access_index(&(src)->field))

// The thread group id of `task->real_parent`, or 0 if it cannot be read.
__u32 guard_task_ppid(const struct task_struct *task)
{
	struct task_struct *parent = 0;
	pid_t tgid = 0;

	if (CORE_READ_INTO(&parent, task, real_parent) != 0 || parent == 0)
		return 0;
	if (CORE_READ_INTO(&tgid, parent, tgid) != 0)
		return 0;
	return (__u32)tgid;
}

// Returns `task->tgid` (the process id, init namespace), or 0 when it cannot be read.
__u32 guard_task_tgid(const struct task_struct *task)
{
	pid_t tgid = 0;

	if (task == 0 || CORE_READ_INTO(&tgid, task, tgid) != 0)
		return 0;
	return (__u32)tgid;
}

// Stores `task->mm->arg_start` and `arg_end` (user addresses of the argument strings).
// Returns 0, or a negative error when they cannot be read.
int guard_task_arg_range(const struct task_struct *task, __u64 *start, __u64 *end)
{
	struct mm_struct *mm = 0;
	unsigned long arg_start = 0, arg_end = 0;
	long err;

	err = CORE_READ_INTO(&mm, task, mm);
	if (err != 0)
		return (int)err;
	if (mm == 0)
		return -14; // -EFAULT: kernel threads have no mm
	err = CORE_READ_INTO(&arg_start, mm, arg_start);
	if (err != 0)
		return (int)err;
	err = CORE_READ_INTO(&arg_end, mm, arg_end);
	if (err != 0)
		return (int)err;
	*start = arg_start;
	*end = arg_end;
	return 0;
}

// `bprm->filename`: the kernel address of the path passed to exec, or 0.
const char *guard_bprm_filename(const struct linux_binprm *bprm)
{
	const char *filename = 0;

	if (CORE_READ_INTO(&filename, bprm, filename) != 0)
		return 0;
	return filename;
}

// --- The file hold (LSM programs) ----------------------------------------------------------

struct qstr {
	// In the kernel `len` sits in an anonymous union; CO-RE finds it by name.
	__u32 len;
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct super_block {
	unsigned int s_dev;
} __attribute__((preserve_access_index));

typedef struct {
	unsigned int val;
} kuid_t;

struct inode {
	unsigned long i_ino;
	unsigned short i_mode;
	kuid_t i_uid;
} __attribute__((preserve_access_index));

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
	struct inode *d_inode;
	struct super_block *d_sb;
} __attribute__((preserve_access_index));

struct path {
	struct dentry *dentry;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
	unsigned int f_mode;
} __attribute__((preserve_access_index));

struct task_struct___flags {
	unsigned int flags;
} __attribute__((preserve_access_index));

// Helper id 115.
static long (*const bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)115;

// The (s_dev, i_ino) of a dentry's inode. Returns 0, or -1 for a negative dentry.
int guard_dentry_key(const struct dentry *d, __u32 *dev, __u64 *ino)
{
	struct inode *inode = 0;
	struct super_block *sb = 0;
	unsigned long i = 0;
	unsigned int s = 0;

	if (CORE_READ_INTO(&inode, d, d_inode) != 0 || inode == 0)
		return -1;
	if (CORE_READ_INTO(&i, inode, i_ino) != 0)
		return -1;
	if (CORE_READ_INTO(&sb, d, d_sb) != 0 || sb == 0)
		return -1;
	if (CORE_READ_INTO(&s, sb, s_dev) != 0)
		return -1;
	*dev = s;
	*ino = i;
	return 0;
}

// `d->d_parent` (equal to `d` at a file system's root), or 0.
const struct dentry *guard_dentry_parent(const struct dentry *d)
{
	struct dentry *p = 0;

	if (CORE_READ_INTO(&p, d, d_parent) != 0)
		return 0;
	return p;
}

// Copies `d->d_name.name` into buf (NUL-terminated, at most len bytes). Returns the helper's result.
long guard_dentry_name(const struct dentry *d, char *buf, __u32 len)
{
	const unsigned char *name = 0;

	if (bpf_probe_read_kernel(&name, sizeof(name), __builtin_preserve_access_index(&d->d_name.name)) != 0 || name == 0)
		return -1;
	return bpf_probe_read_kernel_str(buf, len, name);
}

// `path->dentry`, or 0.
const struct dentry *guard_path_dentry(const struct path *p)
{
	struct dentry *d = 0;

	if (CORE_READ_INTO(&d, p, dentry) != 0)
		return 0;
	return d;
}

// `file->f_path.dentry`, or 0.
const struct dentry *guard_file_dentry(const struct file *f)
{
	struct dentry *d = 0;

	if (bpf_probe_read_kernel(&d, sizeof(d), __builtin_preserve_access_index(&f->f_path.dentry)) != 0)
		return 0;
	return d;
}

// `task->flags`, or 0.
__u32 guard_task_flags(const void *task)
{
	const struct task_struct___flags *t = task;
	unsigned int flags = 0;

	if (CORE_READ_INTO(&flags, t, flags) != 0)
		return 0;
	return flags;
}

// `file->f_mode`, or 0.
__u32 guard_file_mode(const struct file *f)
{
	unsigned int mode = 0;

	if (CORE_READ_INTO(&mode, f, f_mode) != 0)
		return 0;
	return mode;
}

// Must match guard_common::files (NAME_HASH_*, MAX_SUFFIXES, PATTERN_LEN).
#define GUARD_HASH_BASIS 0xcbf29ce484222325ULL
#define GUARD_HASH_PRIME 0x00000100000001b3ULL
#define GUARD_PATTERN_LEN 63

struct guard_name_hashes {
	__u64 h[5];
};

// Hashes of the name of dentry `dentry` for name patterns (guard_common::files::name_hash:
// FNV-1a from the last byte to the first). h[0]: the whole name, or 0 when it is longer than
// GUARD_PATTERN_LEN bytes (only its last GUARD_PATTERN_LEN bytes are read). h[1 + k]: the suffix
// starting at the (k + 1)-th dot from the end, for k < 4. Returns how many suffixes were
// stored, or -1.
//
// A global, never inlined function: the verifier checks it once, on its own, instead of once per
// level of every d_parent walk that calls it (which took more than its 1M instruction budget).
// So its arguments are a scalar and a pointer to memory of known size.
__attribute__((noinline)) int guard_name_hashes(__u64 dentry, struct guard_name_hashes *res)
{
	const struct dentry *d = (const struct dentry *)dentry;
	__u64 *out;
	const unsigned char *name = 0;
	// Zeroed: the bytes past the name's NUL stay 0 (a name has no NUL of its own).
	union {
		__u64 w[(GUARD_PATTERN_LEN + 1) / 8];
		unsigned char b[GUARD_PATTERN_LEN + 1];
	} buf;
	__u32 len = 0, off = 0;
	__u64 h = GUARD_HASH_BASIS;
	long n;
	int k = 0;

	if (res == 0 || d == 0)
		return -1;
	// One store at a time: clang would merge the stores into a call to memset, which 6.1's
	// verifier refuses here.
#pragma unroll
	for (int i = 0; i < (GUARD_PATTERN_LEN + 1) / 8; i++) {
		buf.w[i] = 0;
		asm volatile("" ::: "memory");
	}
	out = res->h;
	if (bpf_probe_read_kernel(&name, sizeof(name), __builtin_preserve_access_index(&d->d_name.name)) != 0 || name == 0)
		return -1;
	if (bpf_probe_read_kernel(&len, sizeof(len), __builtin_preserve_access_index(&d->d_name.len)) != 0)
		return -1;
	if (len > GUARD_PATTERN_LEN)
		off = len - GUARD_PATTERN_LEN;
	n = bpf_probe_read_kernel_str(buf.b, sizeof(buf.b), name + off);
	if (n <= 1)
		return -1;
	// The loop skips the zero bytes past the name instead of comparing each position with n:
	// such a comparison makes the verifier track n exactly, and then explore the rest of the
	// loop once for every length (63 * 63 / 2 iterations: 43,000 instructions per program that
	// calls this, half of an LSM hook's whole cost). k stops at 4 for the same reason.
#pragma unroll
	for (int i = GUARD_PATTERN_LEN - 1; i >= 0; i--) {
		unsigned char c = buf.b[i];

		if (c == 0)
			continue;
		h = (h ^ c) * GUARD_HASH_PRIME;
		if (c == '.' && k < 4) {
			if (k == 0)
				out[1] = h;
			else if (k == 1)
				out[2] = h;
			else if (k == 2)
				out[3] = h;
			else
				out[4] = h;
			k++;
		}
	}
	out[0] = off == 0 ? h : 0;
	return k;
}

// Helper id 35.
static __u64 (*const bpf_get_current_task)(void) = (void *)35;

// Whether `d`'s inode is owned by root and writable by neither group nor others.
static int root_only(const struct dentry *d)
{
	struct inode *inode = 0;
	unsigned short mode = 0;
	unsigned int uid = 1;

	if (CORE_READ_INTO(&inode, d, d_inode) != 0 || inode == 0)
		return 0;
	if (CORE_READ_INTO(&mode, inode, i_mode) != 0 || CORE_READ_INTO(&uid, inode, i_uid.val) != 0)
		return 0;
	return uid == 0 && (mode & 0022) == 0;
}

// 1 when the current task's executable is git (as the seccomp backend's is_git decides): named
// `git` or in a `git-core` directory, and it and that directory owned by root and writable by
// nobody else. The executable is the kernel's own record (mm->exe_file), not the task's name.
int guard_exe_is_git(void)
{
	const struct task_struct *t = (const struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = 0;
	struct file *exe = 0;
	struct dentry *d = 0, *p = 0;
	char name[8], dir[16]; // written by the probe reads before any use
	int named;

	if (t == 0 || CORE_READ_INTO(&mm, t, mm) != 0 || mm == 0)
		return 0;
	if (CORE_READ_INTO(&exe, mm, exe_file) != 0 || exe == 0)
		return 0;
	if (bpf_probe_read_kernel(&d, sizeof(d), __builtin_preserve_access_index(&exe->f_path.dentry)) != 0 || d == 0)
		return 0;
	if (CORE_READ_INTO(&p, d, d_parent) != 0 || p == 0)
		return 0;
	if (guard_dentry_name(d, name, sizeof(name)) < 0 || guard_dentry_name(p, dir, sizeof(dir)) < 0)
		return 0;
	named = (name[0] == 'g' && name[1] == 'i' && name[2] == 't' && name[3] == 0) ||
		(dir[0] == 'g' && dir[1] == 'i' && dir[2] == 't' && dir[3] == '-' && dir[4] == 'c' &&
		 dir[5] == 'o' && dir[6] == 'r' && dir[7] == 'e' && dir[8] == 0);
	return named && root_only(d) && root_only(p);
}
