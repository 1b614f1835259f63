/* Tick JSON assembly: one bytes object per row from a template and per-field columns of text.

   serialize.py renders every field of a batch as a column at once (orjson for numbers, Python for
   the little text there is); what remains per tick is stitching ~50 short tokens between the
   template's literal pieces. In Python that is one `%` over a 50-tuple per tick and a bytes object
   per token, which cost more than decoding, Greeks and publishing together; here it is memcpy.

   assemble(pieces, columns, n) -> list[bytes]
     pieces:  tuple of k + 1 bytes, the literal text around the k fields
     columns: list of k columns, each either
              - a list of n bytes (ready JSON text per row), or
              - bytes holding a flat JSON array of n numbers/nulls, as orjson renders a 1-D
                numpy array ("[1.5,null,7]"); its tokens are read in order, never parsed.
   Row i is pieces[0] + col0[i] + pieces[1] + ... + col(k-1)[i] + pieces[k].
   A column of the wrong length, type or shape raises; nothing is ever read past its end. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

typedef struct {
    PyObject *list;   /* a list of bytes, or NULL for rendered array text */
    const char *cur;  /* array text: start of the next token */
    const char *end;  /* array text: one past its closing ']' */
} Column;

typedef struct {
    char *data;
    Py_ssize_t len, cap;
} Buffer;

static int reserve(Buffer *b, Py_ssize_t more) {
    if (b->len + more <= b->cap)
        return 0;
    Py_ssize_t cap = b->cap * 2;
    if (cap < b->len + more)
        cap = b->len + more;
    char *data = PyMem_Realloc(b->data, cap);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = data;
    b->cap = cap;
    return 0;
}

static int put(Buffer *b, const char *text, Py_ssize_t len) {
    if (reserve(b, len) < 0)
        return -1;
    memcpy(b->data + b->len, text, len);
    b->len += len;
    return 0;
}

/* The next token of column `j` for `row`: a list item, or the array text up to ',' or ']'. */
static int token(Column *c, Py_ssize_t j, Py_ssize_t row, const char **text, Py_ssize_t *len) {
    if (c->list != NULL) {
        PyObject *item = PyList_GET_ITEM(c->list, row);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "column %zd, row %zd: expected bytes, got %.80s", j, row,
                         Py_TYPE(item)->tp_name);
            return -1;
        }
        *text = PyBytes_AS_STRING(item);
        *len = PyBytes_GET_SIZE(item);
        return 0;
    }
    const char *p = c->cur;
    while (p < c->end && *p != ',' && *p != ']' && *p != '[')
        p++;
    if (p == c->end || p == c->cur || *p == '[') {
        PyErr_Format(PyExc_ValueError, "column %zd: not a flat array of one value per row (row %zd)", j, row);
        return -1;
    }
    *text = c->cur;
    *len = p - c->cur;
    c->cur = p + 1;
    return 0;
}

static int open_columns(PyObject *columns, Py_ssize_t n, Column *cols) {
    Py_ssize_t k = PyList_GET_SIZE(columns);
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *col = PyList_GET_ITEM(columns, j);
        if (PyList_Check(col)) {
            if (PyList_GET_SIZE(col) != n) {
                PyErr_Format(PyExc_ValueError, "column %zd has %zd rows, expected %zd", j,
                             PyList_GET_SIZE(col), n);
                return -1;
            }
            cols[j] = (Column){col, NULL, NULL};
        } else if (PyBytes_Check(col)) {
            const char *text = PyBytes_AS_STRING(col);
            Py_ssize_t len = PyBytes_GET_SIZE(col);
            if (len < 2 || text[0] != '[' || text[len - 1] != ']') {
                PyErr_Format(PyExc_ValueError, "column %zd: bytes must be a JSON array", j);
                return -1;
            }
            cols[j] = (Column){NULL, text + 1, text + len};
        } else {
            PyErr_Format(PyExc_TypeError, "column %zd: expected a list or bytes, got %.80s", j,
                         Py_TYPE(col)->tp_name);
            return -1;
        }
    }
    return 0;
}

/* After the last row every array column must have been read to its closing bracket. */
static int all_consumed(Column *cols, Py_ssize_t k, Py_ssize_t n) {
    for (Py_ssize_t j = 0; j < k; j++) {
        if (cols[j].list == NULL && cols[j].cur != cols[j].end && !(n == 0 && cols[j].cur + 1 == cols[j].end)) {
            PyErr_Format(PyExc_ValueError, "column %zd has more values than %zd rows", j, n);
            return -1;
        }
    }
    return 0;
}

static PyObject *rows(PyObject *pieces, Column *cols, Py_ssize_t k, Py_ssize_t n) {
    Py_ssize_t fixed = 0;
    for (Py_ssize_t j = 0; j <= k; j++)
        fixed += PyBytes_GET_SIZE(PyTuple_GET_ITEM(pieces, j));
    Buffer b = {PyMem_Malloc(fixed + 1024), 0, fixed + 1024};
    PyObject *out = PyList_New(n);
    if (b.data == NULL || out == NULL) {
        PyMem_Free(b.data);
        Py_XDECREF(out);
        return b.data == NULL ? PyErr_NoMemory() : NULL;
    }
    for (Py_ssize_t row = 0; row < n; row++) {
        b.len = 0;
        for (Py_ssize_t j = 0; j <= k; j++) {
            PyObject *piece = PyTuple_GET_ITEM(pieces, j);
            if (put(&b, PyBytes_AS_STRING(piece), PyBytes_GET_SIZE(piece)) < 0)
                goto fail;
            if (j == k)
                break;
            const char *text;
            Py_ssize_t len;
            if (token(&cols[j], j, row, &text, &len) < 0 || put(&b, text, len) < 0)
                goto fail;
        }
        PyObject *item = PyBytes_FromStringAndSize(b.data, b.len);
        if (item == NULL)
            goto fail;
        PyList_SET_ITEM(out, row, item);
    }
    PyMem_Free(b.data);
    return out;
fail:
    PyMem_Free(b.data);
    Py_DECREF(out);
    return NULL;
}

static PyObject *assemble(PyObject *self, PyObject *args) {
    PyObject *pieces, *columns;
    Py_ssize_t n;
    if (!PyArg_ParseTuple(args, "O!O!n:assemble", &PyTuple_Type, &pieces, &PyList_Type, &columns, &n))
        return NULL;
    Py_ssize_t k = PyList_GET_SIZE(columns);
    if (n < 0 || PyTuple_GET_SIZE(pieces) != k + 1) {
        PyErr_SetString(PyExc_ValueError, "need n >= 0 and exactly one more piece than columns");
        return NULL;
    }
    for (Py_ssize_t j = 0; j <= k; j++) {
        if (!PyBytes_Check(PyTuple_GET_ITEM(pieces, j))) {
            PyErr_Format(PyExc_TypeError, "piece %zd: expected bytes", j);
            return NULL;
        }
    }
    Column *cols = PyMem_Malloc((k + 1) * sizeof(Column));
    if (cols == NULL)
        return PyErr_NoMemory();
    PyObject *out = NULL;
    if (open_columns(columns, n, cols) == 0) {
        out = rows(pieces, cols, k, n);
        if (out != NULL && all_consumed(cols, k, n) < 0)
            Py_CLEAR(out);
    }
    PyMem_Free(cols);
    return out;
}

static PyMethodDef methods[] = {
    {"assemble", assemble, METH_VARARGS,
     "assemble(pieces, columns, n) -> list[bytes]: row i is pieces[0] + columns[0][i] + pieces[1] + ... "
     "+ pieces[k]; a column is a list of n bytes or a flat JSON array of n values as bytes."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_assemble", "Tick JSON assembly from columns of rendered text.", -1, methods,
};

PyMODINIT_FUNC PyInit__assemble(void) {
    return PyModule_Create(&module);
}
