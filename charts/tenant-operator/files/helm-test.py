# `helm test`: the operator answers on its metrics Service, and runs the chart's appVersion.
# Run as `python -c <this file> URL VERSION` by templates/tests/operator-answers.yaml.
import sys
import urllib.request

url, version = sys.argv[1], sys.argv[2]
try:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
except OSError as error:
    sys.exit(f"the operator does not answer at {url}: {error}")
info = [line for line in text.splitlines() if line.startswith("tenant_operator_build_info{")]
if not info:
    sys.exit(f"{url} answers, but without tenant_operator_build_info: is it tenant-operator?")
if f'version="{version}"' not in info[0]:
    sys.exit(f"the operator at {url} does not run version {version}: {info[0]}")
print(f"tenant-operator {version} answers at {url}")
