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
