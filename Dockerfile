FROM python:3.12-slim

WORKDIR /srv/tandem
COPY pyproject.toml README.md ./
COPY app ./app
RUN pip install --no-cache-dir . && useradd --system tandem
USER tandem

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]
