// Coin miners: XMRig and its forks, and the configs and launch scripts that drive them.
// A binary needs two independent miner markers (one alone appears in documentation and in
// unrelated tools); a config needs a pool URL plus a miner-only key.

rule CoinMiner_XMRig_Binary
{
    meta:
        category = "malware"
        severity = "critical"
        description = "XMRig-family coin miner binary"
    strings:
        $xmrig = "xmrig"
        $xmrig2 = "XMRig"
        $donate = "donate-level"
        $donate_host = "donate.v2.xmrig.com"
        $stratum = "stratum+tcp://"
        $stratum_ssl = "stratum+ssl://"
        $randomx = "randomx"
        $randomx2 = "RandomX"
        $cn = "cryptonight"
        $cn2 = "CryptoNight"
        $nicehash = "nicehash"
        $hashrate = "speed 10s/60s/15m"
    condition:
        (uint32(0) == 0x464c457f or uint16(0) == 0x5a4d) and
        (any of ($xmrig*) and any of ($donate*, $stratum*, $randomx*, $cn*, $hashrate)) or
        3 of ($donate*, $stratum*, $randomx*, $cn*, $nicehash, $hashrate)
}

rule CoinMiner_Generic_Binary
{
    meta:
        category = "malware"
        severity = "high"
        description = "binary with stratum mining protocol strings"
    strings:
        $s1 = "mining.subscribe"
        $s2 = "mining.authorize"
        $s3 = "mining.notify"
        $s4 = "mining.submit"
        $pool = /stratum\+(tcp|ssl|tls):\/\//
    condition:
        (uint32(0) == 0x464c457f or uint16(0) == 0x5a4d) and 3 of them
}
