// Coin-miner configs and launch scripts (text files only: see rules/README).

rule CoinMiner_Config
{
    meta:
        category = "malware"
        severity = "high"
        description = "coin miner configuration (pool URL with miner options)"
    strings:
        $pool = /stratum\+(tcp|ssl|tls):\/\/[A-Za-z0-9.\-]+:[0-9]{2,5}/
        $donate = /"?donate-level"?\s*[:=]/
        $algo = /"algo"\s*:\s*"(rx\/0|cn\/|randomx|cryptonight|kawpow|ethash)/ nocase
        $pools = "\"pools\""
        $wallet = /"user"\s*:\s*"4[0-9AB][1-9A-HJ-NP-Za-km-z]{93}/
    condition:
        filesize < 1MB and uint32(0) != 0x464c457f and
        (($pool and ($donate or $algo or $wallet)) or ($pools and $donate and ($algo or $wallet)))
}

rule CoinMiner_Launcher
{
    meta:
        category = "malware"
        severity = "high"
        description = "script that starts a coin miner against a pool"
    strings:
        $cmd = /(xmrig|minerd|cpuminer|xmr-stak|ccminer|t-rex|lolminer|nbminer)[^\n]{0,200}(-o|--url)[ =]+stratum\+(tcp|ssl|tls):\/\// nocase
        $donate = /--donate-level[ =][0-9]/
    condition:
        filesize < 1MB and uint32(0) != 0x464c457f and any of them
}
