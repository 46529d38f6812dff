#!/usr/bin/env bash
# The CANN (Ascend) environment of the original's test scripts: the toolkit's set_env.sh, error-level device
# logs (msnpureport), host logs off the console, log level error, the task queue on, HCCL's whitelist off.
# test/lib.sh sources it only when a CANN stack is installed (r50_has_cann: a set_env.sh under the root) and
# etp_running_flag is not "true" (the original's platform switch), so on other machines nothing changes.
# MZ_ASCEND_ROOT=DIR names the install root (default: Install_Path of /etc/Ascend/ascend_cann_install.info,
# else /usr/local/Ascend); the tests point it to a fake root.

r50_cann_root_dir=${MZ_ASCEND_ROOT:-}
if [ -z "$r50_cann_root_dir" ] && [ -f /etc/Ascend/ascend_cann_install.info ]; then
  r50_cann_root_dir=$(sed -n 's/^Install_Path=//p' /etc/Ascend/ascend_cann_install.info | head -n 1)
fi
r50_cann_root_dir=${r50_cann_root_dir:-/usr/local/Ascend}
# the full toolkit when it is installed, else the runtime-only NNAE package (the original's order)
if [ -f "$r50_cann_root_dir/ascend-toolkit/set_env.sh" ]; then
  source "$r50_cann_root_dir/ascend-toolkit/set_env.sh"
else
  source "$r50_cann_root_dir/nnae/set_env.sh"
fi
# device logs at error level on the 8 devices of a server; the original calls it unconditionally, here only
# where the driver tool exists (an install without it printed 8 "command not found" lines)
if command -v msnpureport >/dev/null 2>&1; then
  for r50_dev in 0 1 2 3 4 5 6 7; do msnpureport -g error -d "$r50_dev" >/dev/null 2>&1; done
fi
export ASCEND_SLOG_PRINT_TO_STDOUT=0   # host logs not on the console
export ASCEND_GLOBAL_LOG_LEVEL=3       # 0 debug, 1 info, 2 warning, 3 error
export TASK_QUEUE_ENABLE=1             # torch_npu's asynchronous task queue
export HCCL_WHITELIST_DISABLE=1        # HCCL accepts peers without a whitelist file
echo "env_npu.sh: CANN environment from $r50_cann_root_dir" >&2
