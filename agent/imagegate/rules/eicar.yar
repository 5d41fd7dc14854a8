// The EICAR anti-malware test file (https://www.eicar.org/download-anti-malware-testfile/):
// harmless by design, detected by every scanner so that a pipeline can prove it scans.
rule EICAR_Test_File
{
    meta:
        category = "malware"
        severity = "high"
        description = "EICAR anti-malware test file"
    strings:
        $eicar = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
    condition:
        $eicar in (0..128)
}
