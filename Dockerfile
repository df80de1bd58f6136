FROM python:3.12-slim

WORKDIR /srv/tandem
# Dependencies first, in a layer of their own: editing Tandem's code does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
COPY README.md ./
COPY app ./app
RUN pip install --no-cache-dir --no-deps . && useradd --system tandem
USER tandem

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz')"
CMD ["python", "-m", "app", "--host", "0.0.0.0", "--port", "8000"]
