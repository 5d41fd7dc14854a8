"""NVIDIA Xid errors: number -> mnemonic, what happened, NVIDIA's recommended immediate action, and the
action class and severity a device.health record carries.

Source: NVIDIA's public Xid catalog for Ampere and newer GPUs ("Analyzing Xid Errors with the Xid
Catalog", docs.nvidia.com/deploy/xid-errors/analyzing-xid-catalog.html): the mnemonic and the
"Resolution Bucket (Immediate Action)" of every Xid the catalog marks as used on A100, H100, B100 or
GB200. Xids the catalog lists as "Unused" on all four are left out; they read as unknown.

Action classes (DeviceHealthEvent.action), from NVIDIA's buckets:
  IGNORE -> none; RESTART_APP -> restart_app; RESET_GPU -> reset_gpu; RESTART_BM / RESTART_VM -> reboot;
  CONTACT_SUPPORT, CHECK_MECHANICALS, UPDATE_SWFW -> contact_support;
  WORKFLOW_XID_48 (double-bit ECC: "a GPU reset or node reboot is needed") -> drain_and_reset;
  WORKFLOW_XID_13/31/45 (the catalog's application faults) -> restart_app;
  WORKFLOW_NVLINK_ERR (74: "a GPU reset or node reboot is needed") -> reset_gpu;
  WORKFLOW_NVLINK5_ERR (144-150) -> contact_support: the catalog's answer depends on a sub-code (about
  half its rows say IGNORE), and the driver follows a fatal one with Xid 154, which carries the exact
  recovery action (reported through NVML's recovery-action event, see recovery_action()).
Severity follows the action class (SEVERITY_BY_ACTION), except where the catalog's text says the
damage is wider than the bucket: 95 (uncontained: every application on the GPU) is critical.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.vocab import Severity

ACTIONS = ("none", "restart_app", "contact_support", "reset_gpu", "drain_and_reset", "reboot")

SEVERITY_BY_ACTION: dict[str, Severity] = {
    "none": Severity.LOW,
    "restart_app": Severity.MEDIUM,  # the application died; the GPU is fine
    "contact_support": Severity.MEDIUM,
    "reset_gpu": Severity.HIGH,  # nothing runs on this GPU again until it is reset
    "drain_and_reset": Severity.CRITICAL,  # uncorrectable memory error: data was lost
    "reboot": Severity.CRITICAL,  # the GPU is gone from the node until a reboot
}

_BUCKET_ACTION = {
    "IGNORE": "none", "RESTART_APP": "restart_app", "RESET_GPU": "reset_gpu", "RESTART_BM": "reboot",
    "RESTART_VM": "reboot", "CONTACT_SUPPORT": "contact_support", "CHECK_MECHANICALS": "contact_support",
    "UPDATE_SWFW": "contact_support", "CHECK_UVM": "contact_support", "WORKFLOW_XID_13": "restart_app",
    "WORKFLOW_XID_31": "restart_app", "WORKFLOW_XID_45": "restart_app", "WORKFLOW_XID_48": "drain_and_reset",
    "WORKFLOW_NVLINK_ERR": "reset_gpu", "WORKFLOW_NVLINK5_ERR": "contact_support", "XID_154": "contact_support",
}


@dataclass(frozen=True, slots=True)
class Xid:
    number: int
    mnemonic: str
    description: str
    bucket: str  # NVIDIA's immediate-action bucket, as the catalog spells it
    action: str  # ours (ACTIONS)
    severity: Severity
    app_fault: bool = False  # the catalog's application-level faults (13, 31, 43, 45): the GPU is healthy


# number: (mnemonic, description, bucket). Keep the catalog's spelling; our action and severity are derived.
_CATALOG: dict[int, tuple[str, str, str]] = {
    8: ("ROBUST_CHANNEL_FIFO_ERROR_IDLE_TIMEOUT", "GPU stopped processing", "RESTART_APP"),
    11: ("ROBUST_CHANNEL_GR_ERROR_MISSING_HW", "Invalid or corrupted push buffer stream", "RESTART_APP"),
    13: ("ROBUST_CHANNEL_GR_EXCEPTION", "Graphics Engine Exception", "WORKFLOW_XID_13"),
    14: ("ROBUST_CHANNEL_FAKE_ERROR", "Fake or injected error", "IGNORE"),
    25: ("ROBUST_CHANNEL_GR_ILLEGAL_NOTIFY", "Invalid or illegal push buffer stream", "RESTART_APP"),
    31: ("ROBUST_CHANNEL_FIFO_ERROR_MMU_ERR_FLT", "GPU memory page fault", "WORKFLOW_XID_31"),
    32: ("ROBUST_CHANNEL_PBDMA_ERROR", "Invalid or corrupted push buffer stream", "RESTART_APP"),
    37: ("ROBUST_CHANNEL_FECS_ERR_UNIMP_FIRMWARE_METHOD", "Driver firmware error", "IGNORE"),
    38: ("ROBUST_CHANNEL_FECS_ERR_WATCHDOG_TIMEOUT", "Driver firmware error", "IGNORE"),
    39: ("ROBUST_CHANNEL_CE0_ERROR", "Copy Engine Exception", "RESTART_APP"),
    40: ("ROBUST_CHANNEL_CE1_ERROR", "Copy Engine Exception", "RESTART_APP"),
    41: ("ROBUST_CHANNEL_CE2_ERROR", "Copy Engine Exception", "RESTART_APP"),
    43: ("ROBUST_CHANNEL_RESETCHANNEL_VERIF_ERROR", "GPU stopped processing", "IGNORE"),
    44: ("ROBUST_CHANNEL_GR_FAULT_DURING_CTXSW", "Graphics Engine fault during context switch", "IGNORE"),
    45: ("ROBUST_CHANNEL_PREEMPTIVE_REMOVAL", "Preemptive cleanup, due to previous errors", "WORKFLOW_XID_45"),
    46: ("ROBUST_CHANNEL_GPU_TIMEOUT_ERROR", "GPU stopped processing", "RESET_GPU"),
    48: ("ROBUST_CHANNEL_GPU_ECC_DBE", "Double Bit ECC Error", "WORKFLOW_XID_48"),
    54: ("SILENT_RUNNING_PWR_REDUCED_CLOCKING", "Auxiliary power is not connected to the GPU board",
         "CHECK_MECHANICALS"),
    60: ("ROBUST_CHANNEL_SEC2_ERROR", "Video processor exception", "RESTART_APP"),
    62: ("PMU_HALT_ERROR", "Internal micro-controller halt", "RESET_GPU"),
    63: ("INFOROM_DRAM_RETIREMENT_EVENT", "GPU memory remapping event", "IGNORE"),
    64: ("INFOROM_DRAM_RETIREMENT_FAILURE", "GPU memory remapping failure", "RESET_GPU"),
    66: ("ROBUST_CHANNEL_FECS_ERR_REG_ACCESS_VIOLATION", "Illegal access by driver", "IGNORE"),
    67: ("ROBUST_CHANNEL_FECS_ERR_VERIF_VIOLATION", "Illegal access by driver", "IGNORE"),
    68: ("ROBUST_CHANNEL_NVDEC0_ERROR", "NVDEC0 Exception", "RESTART_APP"),
    69: ("ROBUST_CHANNEL_GR_CLASS_ERROR", "Graphics Engine class error", "RESTART_APP"),
    70: ("ROBUST_CHANNEL_CE3_ERROR", "CE3: Unknown Error", "RESTART_APP"),
    71: ("ROBUST_CHANNEL_CE4_ERROR", "CE4: Unknown Error", "RESTART_APP"),
    72: ("ROBUST_CHANNEL_CE5_ERROR", "CE5: Unknown Error", "RESTART_APP"),
    74: ("NVLINK_ERROR", "NVLINK Error", "WORKFLOW_NVLINK_ERR"),
    75: ("ROBUST_CHANNEL_CE6_ERROR", "CE6: Unknown Error", "RESTART_APP"),
    76: ("ROBUST_CHANNEL_CE7_ERROR", "CE7: Unknown Error", "RESTART_APP"),
    77: ("ROBUST_CHANNEL_CE8_ERROR", "CE8: Unknown Error", "RESTART_APP"),
    78: ("VGPU_START_ERROR", "vGPU Start Error", "UPDATE_SWFW"),
    79: ("ROBUST_CHANNEL_GPU_HAS_FALLEN_OFF_THE_BUS", "GPU has fallen off the bus", "RESTART_BM"),
    80: ("PBDMA_PUSHBUFFER_CRC_MISMATCH", "Corrupted data sent to GPU", "RESTART_APP"),
    82: ("ROBUST_CHANNEL_NVJPG0_ERROR", "NVJPG0 Error", "RESTART_APP"),
    83: ("ROBUST_CHANNEL_NVDEC1_ERROR", "NVDEC1 Error", "RESTART_APP"),
    84: ("ROBUST_CHANNEL_NVDEC2_ERROR", "NVDEC2 Error", "RESTART_APP"),
    85: ("ROBUST_CHANNEL_CE9_ERROR", "CE9: Unknown Error", "RESTART_APP"),
    86: ("ROBUST_CHANNEL_OFA0_ERROR", "OFA Exception", "RESTART_APP"),
    88: ("ROBUST_CHANNEL_NVDEC3_ERROR", "NVDEC3 Error", "RESTART_APP"),
    89: ("ROBUST_CHANNEL_NVDEC4_ERROR", "NVDEC4 Error", "RESTART_APP"),
    92: ("EXCESSIVE_SBE_INTERRUPTS", "High single-bit ECC error rate", "IGNORE"),
    93: ("INFOROM_ERASE_LIMIT_EXCEEDED", "Non-fatal violation of provisioned InfoROM wear limit", "IGNORE"),
    94: ("ROBUST_CHANNEL_CONTAINED_ERROR", "Contained memory error", "RESTART_APP"),
    95: ("ROBUST_CHANNEL_UNCONTAINED_ERROR", "Uncontained memory error", "RESET_GPU"),
    96: ("ROBUST_CHANNEL_NVDEC5_ERROR", "NVDEC5 Error", "RESTART_APP"),
    97: ("ROBUST_CHANNEL_NVDEC6_ERROR", "NVDEC6 Error", "RESTART_APP"),
    98: ("ROBUST_CHANNEL_NVDEC7_ERROR", "NVDEC7 Error", "RESTART_APP"),
    99: ("ROBUST_CHANNEL_NVJPG1_ERROR", "NVJPG1 Error", "RESTART_APP"),
    100: ("ROBUST_CHANNEL_NVJPG2_ERROR", "NVJPG2 Error", "RESTART_APP"),
    101: ("ROBUST_CHANNEL_NVJPG3_ERROR", "NVJPG3 Error", "RESTART_APP"),
    102: ("ROBUST_CHANNEL_NVJPG4_ERROR", "NVJPG4 Error", "RESTART_APP"),
    103: ("ROBUST_CHANNEL_NVJPG5_ERROR", "NVJPG5 Error", "RESTART_APP"),
    104: ("ROBUST_CHANNEL_NVJPG6_ERROR", "NVJPG6 Error", "RESTART_APP"),
    105: ("ROBUST_CHANNEL_NVJPG7_ERROR", "NVJPG7 Error", "RESTART_APP"),
    106: ("SMBPBI_TEST_MESSAGE", "SMBPBI Test Message", "IGNORE"),
    107: ("SMBPBI_TEST_MESSAGE_SILENT", "SMBPBI Test Message Silent", "IGNORE"),
    109: ("ROBUST_CHANNEL_CTXSW_TIMEOUT_ERROR", "Context Switch Timeout Error", "RESET_GPU"),
    110: ("SEC_FAULT_ERROR", "Security Fault Error", "RESET_GPU"),
    119: ("GSP_RPC_TIMEOUT", "GSP RPC Timeout", "RESET_GPU"),
    120: ("GSP_ERROR", "GSP Error", "RESET_GPU"),
    121: ("C2C_ERROR", "C2C Error", "IGNORE"),
    126: ("ROBUST_CHANNEL_CE10_ERROR", "CE10: Unknown Error", "RESTART_APP"),
    127: ("ROBUST_CHANNEL_CE11_ERROR", "CE11: Unknown Error", "RESTART_APP"),
    128: ("ROBUST_CHANNEL_CE12_ERROR", "CE12: Unknown Error", "RESTART_APP"),
    129: ("ROBUST_CHANNEL_CE13_ERROR", "CE13: Unknown Error", "RESTART_APP"),
    130: ("ROBUST_CHANNEL_CE14_ERROR", "CE14: Unknown Error", "RESTART_APP"),
    131: ("ROBUST_CHANNEL_CE15_ERROR", "CE15: Unknown Error", "RESTART_APP"),
    132: ("ROBUST_CHANNEL_CE16_ERROR", "CE16: Unknown Error", "RESTART_APP"),
    133: ("ROBUST_CHANNEL_CE17_ERROR", "CE17: Unknown Error", "RESTART_APP"),
    134: ("ROBUST_CHANNEL_CE18_ERROR", "CE18: Unknown Error", "RESTART_APP"),
    135: ("ROBUST_CHANNEL_CE19_ERROR", "CE19: Unknown Error", "RESTART_APP"),
    136: ("ALI_TRAINING_FAIL", "Link Training Failed", "RESET_GPU"),
    137: ("NVLINK_PRIV_ERR", "NVLink Privilege Error", "IGNORE"),
    139: ("ROBUST_CHANNEL_OFA1_ERROR", "OFA1 Error", "RESTART_APP"),
    140: ("UNRECOVERABLE_ECC_ERROR_ESCAPE", "ECC Unrecovered Error", "RESET_GPU"),
    141: ("ROBUST_CHANNEL_FAST_PATH_ERROR", "CUDA Fast Path Error", "IGNORE"),
    142: ("ROBUST_CHANNEL_NVENC3_ERROR", "NVENC3 Error", "CONTACT_SUPPORT"),
    143: ("GPU_INIT_ERROR", "GPU Initialization Error", "RESET_GPU"),
    144: ("NVLINK_SAW_ERROR", "NVLINK: SAW Error", "WORKFLOW_NVLINK5_ERR"),
    145: ("NVLINK_RLW_ERROR", "NVLINK: RLW Error", "WORKFLOW_NVLINK5_ERR"),
    146: ("NVLINK_TLW_ERROR", "NVLINK: TLW Error", "WORKFLOW_NVLINK5_ERR"),
    147: ("NVLINK_TREX_ERROR", "NVLINK: TREX Error", "WORKFLOW_NVLINK5_ERR"),
    148: ("NVLINK_NVLPW_CTRL_ERROR", "NVLINK: NVLPW_CTRL Error", "WORKFLOW_NVLINK5_ERR"),
    149: ("NVLINK_NETIR_ERROR", "NVLINK: NETIR Error", "WORKFLOW_NVLINK5_ERR"),
    150: ("NVLINK_MSE_ERROR", "NVLINK: MSE Error", "WORKFLOW_NVLINK5_ERR"),
    151: ("ROBUST_CHANNEL_KEY_ROTATION_ERROR", "Key rotation Error", "RESTART_VM"),
    154: ("GPU_RECOVERY_ACTION_CHANGED", "GPU Recovery Action Changed", "XID_154"),
    155: ("NVLINK_SW_DEFINED_ERROR", "NVLINK: SW Defined Error", "RESET_GPU"),
    156: ("RESOURCE_RETIREMENT_EVENT", "Resource Retirement Event", "RESET_GPU"),
    157: ("RESOURCE_RETIREMENT_FAILURE", "Resource Retirement Failure", "IGNORE"),
    158: ("GPU_FATAL_TIMEOUT", "GPU Fatal Timeout", "RESET_GPU"),
    159: ("ROBUST_CHANNEL_CHI_NON_DATA_ERROR", "CHI Non-Data Error", "CHECK_UVM"),
    160: ("CHANNEL_RETIREMENT_EVENT", "Channel Retirement Event", "IGNORE"),
    161: ("CHANNEL_RETIREMENT_FAILURE", "Channel Retirement Failure", "IGNORE"),
}

# Where the catalog's own text says more than its bucket.
_SEVERITY_OVERRIDE = {95: Severity.CRITICAL}
# The catalog's application-level faults: "logged for general user application faults" (13), "typically
# application-level bugs" (31), "a user application hits a software induced fault and must terminate. The
# GPU remains in a healthy state" (43), "the user application aborts" (45). Medium, restart the app.
_APP_FAULTS = frozenset({13, 31, 43, 45})


def _entry(number: int, mnemonic: str, description: str, bucket: str) -> Xid:
    action = "restart_app" if number in _APP_FAULTS else _BUCKET_ACTION[bucket]
    severity = _SEVERITY_OVERRIDE.get(number, SEVERITY_BY_ACTION[action])
    return Xid(number, mnemonic, description, bucket, action, severity, number in _APP_FAULTS)


XIDS: dict[int, Xid] = {n: _entry(n, *row) for n, row in _CATALOG.items()}


def lookup(number: int) -> Xid:
    """The table's entry; an Xid it does not know (a newer driver's, or one the catalog calls unused)
    is reported high: the driver found it critical enough to raise, and we cannot say it is harmless."""
    known = XIDS.get(number)
    if known is not None:
        return known
    return Xid(number, "", f"Xid {number} (not in NodeWarden's table)", "", "contact_support", Severity.HIGH)


# NVML's nvmlGpuRecoveryAction_t (the eventData of nvmlEventTypeGpuRecoveryAction; Xid 154's text):
# value -> (NVIDIA's words, our action class).
RECOVERY_ACTIONS: dict[int, tuple[str, str]] = {
    0: ("None", "none"),
    1: ("GPU Reset Required", "reset_gpu"),
    2: ("Node Reboot Required", "reboot"),
    3: ("Drain P2P", "drain_and_reset"),
    4: ("Drain and Reset", "drain_and_reset"),
    5: ("Recover IMEX domain", "contact_support"),
    6: ("Bus Reset", "reset_gpu"),
    7: ("System Reboot", "reboot"),
}


def recovery_action(value: int) -> tuple[str, str, Severity]:
    """NVML's recovery action -> (words, action class, severity); an unknown value -> contact support."""
    words, action = RECOVERY_ACTIONS.get(value, (f"recovery action {value}", "contact_support"))
    return words, action, SEVERITY_BY_ACTION[action]
