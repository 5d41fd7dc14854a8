/* A small stand-in for vmlinux: every struct and member agent/kernel/offsets.py reads, laid out the
 * way the kernel does it (members inside anonymous unions and structs, bitfields, pointers, arrays),
 * with filler so that no offset is a lucky guess. tests/unit/test_btf.py compiles it with
 * `gcc -gbtf`, so the BTF is the compiler's, and checks our parser against the compiler's offsetof. */
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned long long u64;
typedef int pid_t;

struct ns_common { long stashed; const void *ops; unsigned int inum; int count; };
struct mnt_namespace { int pad; struct ns_common ns; void *root; };
struct nsproxy { int count; void *uts_ns; void *ipc_ns; struct mnt_namespace *mnt_ns; };
struct file_system_type { const char *name; int fs_flags; };
struct super_block { void *s_list; char s_blocksize_bits; unsigned int s_dev; char filler[20];
                    struct file_system_type *s_type; unsigned long s_magic; };
struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const unsigned char *name; };
struct hlist_bl_node { struct hlist_bl_node *next, **pprev; };
struct dentry { unsigned int d_flags; int d_seq; struct hlist_bl_node d_hash; struct dentry *d_parent;
                struct qstr d_name; void *d_inode; };
struct vfsmount { struct dentry *mnt_root; struct super_block *mnt_sb; int mnt_flags; void *mnt_idmap; };
struct path { struct vfsmount *mnt; struct dentry *dentry; };
struct mount { void *mnt_hash[2]; struct mount *mnt_parent; struct dentry *mnt_mountpoint; struct vfsmount mnt;
               char filler[40]; struct mnt_namespace *mnt_ns; int pad; int mnt_id; const char *mnt_devname; };
struct fs_struct { int users; int lock; int seq; int umask; int in_exec; struct path root, pwd; };
struct inode { unsigned short i_mode; unsigned int i_flags: 3, i_state: 5; struct super_block *i_sb;
               union { const unsigned int i_nlink; unsigned int __i_nlink; }; unsigned long i_ino; };
struct file { union { void *f_llist; long f_rcuhead[2]; }; struct inode *f_inode; unsigned int f_flags;
              void *private_data; struct path f_path; };
struct fdtable { unsigned int max_fds; struct file **fd; };
struct files_struct { int count; char resize_in_progress; struct fdtable *fdt; struct fdtable fdtab; };
struct mm_struct { struct { void *mmap; unsigned long task_size; char filler[100];
                   unsigned long start_stack, arg_start, arg_end; struct file *exe_file; }; unsigned long flags; };
typedef struct { unsigned int val; } kuid_t;
typedef struct { unsigned int val; } kgid_t;
struct user_namespace { void *uid_map[3]; int pad; int level; unsigned int owner; };
struct cred { int usage; kuid_t uid; kgid_t gid; kuid_t suid; kgid_t sgid; kuid_t euid; kgid_t egid; kuid_t fsuid;
              kgid_t fsgid; unsigned int securebits; char filler[40]; struct user_namespace *user_ns; };
struct task_struct { unsigned int __state; void *stack; unsigned int in_execve: 1, in_iowait: 1;
                     struct mm_struct *mm; int exit_state; int exit_code; pid_t pid; pid_t tgid;
                     struct task_struct *real_parent; char comm[16]; struct files_struct *files;
                     const struct cred *real_cred; struct nsproxy *nsproxy; struct fs_struct *fs; };
struct in6_addr { union { unsigned char u6_addr8[16]; u32 u6_addr32[4]; } in6_u; };
struct sock_common {
    union { u64 skc_addrpair; struct { u32 skc_daddr; u32 skc_rcv_saddr; }; };
    union { unsigned int skc_hash; u16 skc_u16hashes[2]; };
    union { u32 skc_portpair; struct { u16 skc_dport; u16 skc_num; }; };
    unsigned short skc_family; volatile unsigned char skc_state; unsigned char skc_reuse: 4, skc_reuseport: 1;
    int skc_bound_dev_if; struct in6_addr skc_v6_daddr; struct in6_addr skc_v6_rcv_saddr;
};
struct sock { struct sock_common __sk_common; int sk_rcvbuf; };
struct socket { int state; short type; unsigned long flags; void *file; struct sock *sk; };
