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

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
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
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct super_block {
	unsigned int s_dev;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
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
