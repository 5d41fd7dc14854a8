// Secrets baked into image files. Matches are reported by kind and path only: the gate never
// copies the matched bytes into a finding, a log line or the cache.

rule Secret_Private_Key
{
    meta:
        category = "secret"
        severity = "high"
        description = "private key"
    strings:
        $pem = /-----BEGIN (RSA |DSA |EC |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY( BLOCK)?-----/
    condition:
        $pem
}

rule Secret_AWS_Access_Key
{
    meta:
        category = "secret"
        severity = "high"
        description = "AWS access key (key id with its secret access key)"
    strings:
        $id = /\b(AKIA|ASIA)[0-9A-Z]{16}\b/
        $secret = /aws_?secret_?access_?key["']?\s*[:=]\s*["']?[A-Za-z0-9\/+]{40}/ nocase
    condition:
        $id and $secret
}

rule Secret_AWS_Access_Key_Id
{
    meta:
        category = "secret"
        severity = "medium"
        description = "AWS access key id"
    strings:
        $id = /\b(AKIA|ASIA)[0-9A-Z]{16}\b/
        $secret = /aws_?secret_?access_?key["']?\s*[:=]\s*["']?[A-Za-z0-9\/+]{40}/ nocase
    condition:
        $id and not $secret
}
