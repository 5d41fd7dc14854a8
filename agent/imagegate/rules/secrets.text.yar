// Secrets in text files (configs, scripts, JSON keys): matched by kind, never copied.

rule Secret_GCP_Service_Account
{
    meta:
        category = "secret"
        severity = "high"
        description = "Google Cloud service account key"
    strings:
        $type = /"type"\s*:\s*"service_account"/
        $key = "\"private_key\""
    condition:
        $type and $key
}

rule Secret_Token
{
    meta:
        category = "secret"
        severity = "medium"
        description = "API token (GitHub, GitLab, Slack, Stripe or Google)"
    strings:
        $github = /\bgh[pousr]_[A-Za-z0-9]{36}\b/
        $github_pat = /\bgithub_pat_[A-Za-z0-9_]{82}\b/
        $gitlab = /\bglpat-[A-Za-z0-9_\-]{20}\b/
        $slack = /\bxox[baprs]-[0-9]{8,}-[0-9A-Za-z\-]{8,}/
        $stripe = /\b(sk|rk)_live_[0-9A-Za-z]{24,}/
        $google = /\bAIza[0-9A-Za-z_\-]{35}\b/
    condition:
        any of them
}
